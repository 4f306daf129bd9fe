// The gRPC Observer (kappa.observer.v1.Observer/GetFlows): buffered flows since a time, then, with
// follow, new ones as they arrive; filtered per request, with flow control towards slow clients.
import { Server, status } from '@grpc/grpc-js';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { GetFlowsResponseSchema, create, grpcServerSecurity, observerServiceDefinition } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse, GrpcServerSecurity } from '@kappa/contracts';
import type { Logger } from '@kappa/observability';
import { compileFilter } from './filter.js';
import type { BufferedFlow, FlowRing } from './ring.js';

export interface ObserverServerOptions {
  ring: FlowRing;
  host: string;
  port: number;
  logger: Logger;
  /** A follower further behind than this many records is cut off (RESOURCE_EXHAUSTED). */
  maxFollowQueue?: number;
  /** TLS, mutual TLS and bearer token (--observer-tls-cert/-key, --observer-tls-client-ca, --observer-token-file). */
  security?: GrpcServerSecurity;
}

type GetFlowsCall = ServerWritableStream<GetFlowsRequest, GetFlowsResponse>;

export class ObserverServer {
  private server: Server | undefined;
  private boundPort = 0;
  /** Open calls and how to end each one at shutdown. */
  private readonly calls = new Map<GetFlowsCall, () => void>();

  constructor(private readonly options: ObserverServerOptions) {}

  get port(): number {
    return this.boundPort;
  }

  /** Listens; throws GrpcSecurityError when the TLS or token files cannot be used. */
  async start(): Promise<void> {
    const { logger } = this.options;
    const secured = grpcServerSecurity(this.options.security ?? {}, 'the Observer gRPC service', 'observer');
    if (secured.warning) logger.warn(secured.warning);
    const server = new Server({ interceptors: secured.interceptors });
    this.server = server;
    server.addService(observerServiceDefinition, {
      GetFlows: (call: GetFlowsCall) => {
        this.getFlows(call)
          .catch((error: unknown) => {
            logger.warn({ err: error }, 'GetFlows failed');
            call.emit('error', { code: status.INTERNAL, details: error instanceof Error ? error.message : String(error) });
          })
          .finally(() => this.calls.delete(call));
      },
    });
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host}:${this.options.port}`, secured.credentials, (error, port) => {
        if (error) reject(error);
        else resolve(port);
      });
    });
  }

  private async getFlows(call: GetFlowsCall): Promise<void> {
    const request = call.request;
    const matches = compileFilter(request.filter);
    const limit = request.limit > 0 ? request.limit : Number.POSITIVE_INFINITY;
    let sent = 0;
    let cancelled = false;
    let wake: (() => void) | undefined;
    const onGone = () => {
      cancelled = true;
      wake?.();
    };
    call.once('cancelled', onGone);
    call.once('close', onGone);
    let shuttingDown = false;
    this.calls.set(call, () => {
      shuttingDown = true;
      wake?.();
    });
    const queue: BufferedFlow[] = [];
    let overflow = false;
    const maxQueue = this.options.maxFollowQueue ?? 100_000;
    // Subscribe in the same tick as the snapshot, so no record falls between the two.
    const unsubscribe = request.follow
      ? this.options.ring.subscribe((flow) => {
          if (!matches(flow.record)) return;
          if (queue.length >= maxQueue) overflow = true;
          else queue.push(flow);
          wake?.();
        })
      : () => false;
    const snapshot: BufferedFlow[] = [];
    this.options.ring.trim(BigInt(Date.now()) * 1_000_000n);
    for (const flow of this.options.ring.since(request.sinceNs)) if (matches(flow.record)) snapshot.push(flow);
    const write = async (flow: BufferedFlow) => {
      const response = create(GetFlowsResponseSchema, { flow: flow.record, receivedNs: flow.receivedNs });
      sent++;
      if (call.write(response) || cancelled) return;
      // Flow control: wait until the client has read what is buffered (or went away).
      await new Promise<void>((resolve) => {
        const done = () => {
          call.off('drain', done);
          wake = undefined;
          resolve();
        };
        wake = done;
        call.once('drain', done);
      });
    };
    try {
      for (const flow of snapshot) {
        if (cancelled || shuttingDown || sent >= limit) break;
        await write(flow);
      }
      while (request.follow && !cancelled && !shuttingDown && sent < limit) {
        if (overflow) {
          call.emit('error', { code: status.RESOURCE_EXHAUSTED, details: `client fell more than ${maxQueue} records behind; reconnect with a narrower filter` });
          return;
        }
        const flow = queue.shift();
        if (flow) {
          await write(flow);
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      unsubscribe();
      call.off('cancelled', onGone);
      call.off('close', onGone);
    }
    if (!cancelled) call.end();
  }

  /** Ends open streams (the client sees a normal end) and stops listening. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    for (const end of this.calls.values()) end();
    await new Promise<void>((resolve) => {
      server.tryShutdown(() => resolve());
      setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000).unref();
    });
  }
}
