// Container names from the node's CRI runtime (containerd, CRI-O) over its unix socket:
// runtime.v1.RuntimeService/ListContainers, refreshed when an unknown container id shows up.
// Without a reachable socket names stay empty (k8s-tagger knows them from the pod status).
import { existsSync } from 'node:fs';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import { Client, credentials, status as grpcStatus } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import type { Logger } from '@kappa/observability';
import {
  ListContainersRequestSchema,
  ListContainersResponseSchema,
  VersionRequestSchema,
  VersionResponseSchema,
} from './gen/runtime/v1/api_pb.js';
import type { ContainerRuntime } from './container.js';

export const defaultCriSockets = ['/run/containerd/containerd.sock', '/run/crio/crio.sock'] as const;

/** The CRI socket answered with an error or not at all. */
export class CriUnavailableError extends Error {
  override readonly name = 'CriUnavailableError';
  constructor(socket: string, options: { cause: unknown }) {
    super(`CRI runtime at ${socket} did not answer (${(options.cause as Error).message}); container names stay empty`, options);
  }
}

function unary<I extends DescMessage, O extends DescMessage>(
  client: Client,
  method: string,
  input: I,
  output: O,
  request: MessageShape<I>,
  timeoutMs: number,
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      `/runtime.v1.RuntimeService/${method}`,
      (value: MessageShape<I>) => Buffer.from(toBinary(input, value)),
      (bytes: Buffer) => fromBinary(output, bytes),
      request,
      { deadline: Date.now() + timeoutMs },
      (error: ServiceError | null, response?: MessageShape<O>) => {
        if (error || response === undefined) reject(error ?? new Error('empty response'));
        else resolve(response);
      },
    );
  });
}

export interface CriOptions {
  /** Socket paths to try in order; the first that answers Version is used. */
  sockets: readonly string[];
  logger: Logger;
  timeoutMs?: number;
  /** Least time between two ListContainers calls. */
  minRefreshIntervalMs?: number;
  /** Time between two tries to find a socket when none answered. */
  reconnectIntervalMs?: number;
}

export class CriContainerNames {
  private client: Client | undefined;
  private socket: string | undefined;
  private names = new Map<string, string>();
  private lastRefreshAt = -Infinity;
  private refreshing: Promise<void> | undefined;
  private connecting: Promise<boolean> | undefined;
  private lastConnectAt = -Infinity;
  private saidUnreachable = false;
  /** The runtime behind the socket, from Version (containerd, cri-o). */
  runtime: ContainerRuntime | '' = '';
  refreshes = 0;
  failures = 0;

  constructor(private readonly options: CriOptions) {}

  get connected(): boolean {
    return this.client !== undefined;
  }

  get socketPath(): string | undefined {
    return this.socket;
  }

  /** Finds a socket that answers; logs one line saying which, or (once) that none did. */
  async connect(): Promise<boolean> {
    this.lastConnectAt = Date.now();
    const tried: string[] = [];
    for (const socket of this.options.sockets) {
      if (!existsSync(socket)) {
        tried.push(`${socket} (absent)`);
        continue;
      }
      const client = new Client(`unix://${socket}`, credentials.createInsecure());
      try {
        const version = await unary(client, 'Version', VersionRequestSchema, VersionResponseSchema, create(VersionRequestSchema, { version: 'v1' }), this.timeoutMs);
        this.client = client;
        this.socket = socket;
        this.runtime = /crio|cri-o/i.test(version.runtimeName) ? 'cri-o' : /containerd/i.test(version.runtimeName) ? 'containerd' : '';
        this.options.logger.info({ criSocket: socket, runtime: version.runtimeName, runtimeVersion: version.runtimeVersion }, 'container names from the CRI runtime');
        return true;
      } catch (error) {
        client.close();
        tried.push(`${socket} (${(error as ServiceError).code === grpcStatus.UNAVAILABLE ? 'unavailable' : (error as Error).message})`);
      }
    }
    if (!this.saidUnreachable) this.options.logger.info({ tried }, 'no CRI runtime socket reachable: container names are left to k8s-tagger');
    this.saidUnreachable = true;
    return false;
  }

  /** A runtime started after us (or restarted) is found on a later try, once a minute. */
  reconnectIfDue(): void {
    if (this.client || this.connecting || Date.now() - this.lastConnectAt < (this.options.reconnectIntervalMs ?? 60_000)) return;
    this.connecting = this.connect()
      .catch(() => false)
      .finally(() => (this.connecting = undefined));
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 2000;
  }

  /** The name of a container, if the runtime listed it at the last refresh. */
  name(containerId: string): string | undefined {
    return this.names.get(containerId);
  }

  /** Lists containers again unless that was done less than minRefreshIntervalMs ago. */
  async refreshIfStale(): Promise<void> {
    if (!this.client) return;
    if (Date.now() - this.lastRefreshAt < (this.options.minRefreshIntervalMs ?? 2000)) return this.refreshing;
    this.lastRefreshAt = Date.now();
    this.refreshing = this.refresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async refresh(): Promise<void> {
    const client = this.client;
    if (!client || !this.socket) return;
    try {
      const response = await unary(client, 'ListContainers', ListContainersRequestSchema, ListContainersResponseSchema, create(ListContainersRequestSchema), this.timeoutMs);
      const names = new Map<string, string>();
      for (const c of response.containers) if (c.metadata?.name) names.set(c.id, c.metadata.name);
      this.names = names;
      this.refreshes++;
    } catch (cause) {
      this.failures++;
      // Say it once per outage, not per batch.
      if (this.failures === 1 || this.refreshes > 0) this.options.logger.warn({ err: new CriUnavailableError(this.socket, { cause }) }, 'ListContainers failed');
      this.refreshes = 0;
    }
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }
}
