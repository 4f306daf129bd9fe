// kappa.tagger.v1.KubeTags over grpc-js: Lookup answers what the index knows of an IP or a
// container id (as of a time), Watch streams index changes; `kappa tags` is its client.
import { Server, status } from '@grpc/grpc-js';
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js';
import { canonicalIp, create, grpcServerSecurity, kubeTagsServiceDefinition, LookupResponseSchema, WatchResponseSchema } from '@kappa/contracts';
import type { GrpcServerSecurity, LookupRequest, LookupResponse, WatchRequest, WatchResponse } from '@kappa/contracts';
import type { Logger } from '@kappa/observability';
import type { KubeIndex } from './kube-index.js';

export class GrpcListenError extends Error {
  constructor(address: string, options: { cause: unknown }) {
    super(`cannot serve gRPC on ${address}: is the port free? (--grpc-port)`, options);
    this.name = 'GrpcListenError';
  }
}

export interface LookupCounter {
  (found: boolean): void;
}

/** Answers one Lookup from the index; undefined index (no cluster) never finds anything. */
export function lookup(index: KubeIndex | undefined, request: LookupRequest): LookupResponse {
  const atNs = request.atNs > 0n ? request.atNs : BigInt(Date.now()) * 1_000_000n;
  if (!index) return create(LookupResponseSchema, { found: false });
  if (request.key.case === 'containerId') {
    const resolved = index.resolveContainer(request.key.value);
    return resolved.type === 'none' ? create(LookupResponseSchema, { found: false }) : create(LookupResponseSchema, { found: true, kube: resolved.kube });
  }
  if (request.key.case === 'ip') {
    const ip = canonicalIp(request.key.value);
    const resolved = index.resolveIp(ip, atNs);
    if (resolved.type === 'none') return create(LookupResponseSchema, { found: false });
    return create(LookupResponseSchema, {
      found: true,
      kube: resolved.kube,
      backends: resolved.type === 'service' ? index.backendsOf(ip) : [],
    });
  }
  return create(LookupResponseSchema, { found: false });
}

export interface KubeTagsServer {
  readonly port: number;
  stop(): Promise<void>;
}

export async function startKubeTagsServer(
  index: () => KubeIndex | undefined,
  options: { port: number; host?: string; onLookup?: LookupCounter; security?: GrpcServerSecurity; logger?: Logger },
): Promise<KubeTagsServer> {
  // TLS, mutual TLS and the bearer token: flags --grpc-tls-cert/-key, --grpc-tls-client-ca, --grpc-token-file.
  const secured = grpcServerSecurity(options.security ?? {}, 'KubeTags gRPC', 'grpc');
  if (secured.warning) options.logger?.warn(secured.warning);
  const server = new Server({ interceptors: secured.interceptors });
  const watchers = new Set<ServerWritableStream<WatchRequest, WatchResponse>>();
  server.addService(kubeTagsServiceDefinition, {
    Lookup: (call: ServerUnaryCall<LookupRequest, LookupResponse>, callback: sendUnaryData<LookupResponse>) => {
      try {
        const response = lookup(index(), call.request);
        options.onLookup?.(response.found);
        callback(null, response);
      } catch (error) {
        callback({ code: status.INVALID_ARGUMENT, details: error instanceof Error ? error.message : String(error) });
      }
    },
    Watch: (call: ServerWritableStream<WatchRequest, WatchResponse>) => {
      const current = index();
      if (!current) {
        call.end();
        return;
      }
      watchers.add(call);
      const unsubscribe = current.subscribe((change) => {
        call.write(create(WatchResponseSchema, { key: change.key, kube: change.kube, removed: change.removed, atNs: change.atNs }));
      });
      const done = () => {
        unsubscribe();
        watchers.delete(call);
      };
      call.on('cancelled', done);
      call.on('close', done);
      call.on('error', done);
    },
  });
  const address = `${options.host ?? '0.0.0.0'}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, secured.credentials, (error, bound) => {
      if (error) reject(new GrpcListenError(address, { cause: error }));
      else resolve(bound);
    });
  });
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const call of watchers) call.end();
        const timer = setTimeout(() => server.forceShutdown(), 5000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
