// The gRPC Observer (kappa.observer.v1.Observer): flows over a range of flow time from the flow
// store (or, with the store off, the in-memory ring), then with follow new ones from the ring as
// they arrive; aggregates for the service map and top talkers; the stages' health. Every filter
// is the filter language of @kappa/filter; flow control towards slow clients.
import { Metadata, Server, status } from '@grpc/grpc-js';
import type { ServerUnaryCall, ServerWritableStream, sendUnaryData } from '@grpc/grpc-js';
import {
  AggregateSchema,
  GetAggregatesResponseSchema,
  GetFlowsResponseSchema,
  GetStatusResponseSchema,
  InstanceStatusSchema,
  OBSERVER_MISSING_TRAILER,
  OBSERVER_SCOPE_HEADER,
  StoreStatusSchema,
  create,
  grpcServerSecurity,
  observerServiceDefinition,
} from '@kappa/contracts';
import type {
  GetAggregatesRequest,
  GetAggregatesResponse,
  GetFlowsRequest,
  GetFlowsResponse,
  GetStatusRequest,
  GetStatusResponse,
  GrpcServerSecurity,
} from '@kappa/contracts';
import { FilterError, compilePredicate } from '@kappa/filter';
import type { FlowPredicate } from '@kappa/filter';
import type { Logger } from '@kappa/observability';
import { aggregateLevels, aggregateMetrics, aggregateSides } from '../store/store.js';
import type { AggregateLevel, AggregateMetric, AggregateSide, FlowStore, StoredFlow } from '../store/store.js';
import { mergeAggregates, mergeFlows, mergeStoreStatus } from './relay.js';
import type { Missing, ObserverPeer, ObserverRelay, PeerFollow } from './relay.js';
import type { BufferedFlow, FlowRing } from './ring.js';
import type { StatusWatch } from './status-watch.js';

export interface ObserverServerOptions {
  ring: FlowRing;
  /** The flow store; without it history is what the ring holds and aggregates are refused. */
  store?: FlowStore;
  storeLimits?: { maxBytes: number; retentionMs: number };
  status?: StatusWatch;
  /** Asks the other exporter replicas for their share of each answer (absent: this replica's own only). */
  relay?: ObserverRelay;
  host: string;
  port: number;
  logger: Logger;
  /** A follower further behind than this many records is cut off (RESOURCE_EXHAUSTED). */
  maxFollowQueue?: number;
  /** TLS, mutual TLS and bearer token (--observer-tls-cert/-key, --observer-tls-client-ca, --observer-token-file). */
  security?: GrpcServerSecurity;
}

type GetFlowsCall = ServerWritableStream<GetFlowsRequest, GetFlowsResponse>;

/** A request the client must fix: INVALID_ARGUMENT with this message. */
class BadRequest extends Error {}

function predicateOf(query: string): FlowPredicate {
  try {
    return compilePredicate(query);
  } catch (error) {
    if (error instanceof FilterError) throw new BadRequest(`bad filter: ${error.message}`);
    throw error;
  }
}

function grpcError(error: unknown): { code: status; details: string } {
  if (error instanceof BadRequest) return { code: status.INVALID_ARGUMENT, details: error.message };
  if (error instanceof FilterError) return { code: status.INVALID_ARGUMENT, details: `bad filter: ${error.message}` };
  return { code: status.INTERNAL, details: error instanceof Error ? error.message : String(error) };
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

/** How often a relayed follower looks for replicas it does not follow yet (started, or back). */
const PEER_RESCAN_MS = 5000;

/** The relayed answer's missing replicas, as metadata (a follower's headers, others' trailers). */
function missingMetadata(missing: Missing, into = new Metadata()): Metadata {
  if (missing.length > 0) into.set(OBSERVER_MISSING_TRAILER, missing.join('; ').replace(/\s+/g, ' ').trim());
  return into;
}

export class ObserverServer {
  private server: Server | undefined;
  private boundPort = 0;
  /** Open calls and how to end each one at shutdown. */
  private readonly calls = new Map<GetFlowsCall, () => void>();

  constructor(private readonly options: ObserverServerOptions) {}

  get port(): number {
    return this.boundPort;
  }

  /** The relay for this call: none when the caller wants this replica's own share (another replica's relay). */
  private relayFor(metadata: Metadata): ObserverRelay | undefined {
    return metadata.get(OBSERVER_SCOPE_HEADER)[0] === 'local' ? undefined : this.options.relay;
  }

  /** Listens; throws GrpcSecurityError when the TLS or token files cannot be used. */
  async start(): Promise<void> {
    const { logger } = this.options;
    const secured = grpcServerSecurity(this.options.security ?? {}, 'the Observer gRPC service', 'observer');
    if (secured.warning) logger.warn(secured.warning);
    const server = new Server({ interceptors: secured.interceptors });
    this.server = server;
    const unary =
      <I, O>(name: string, handler: (request: I, relay: ObserverRelay | undefined, missing: Missing) => Promise<O>) =>
      (call: ServerUnaryCall<I, O>, callback: sendUnaryData<O>) => {
        const missing: Missing = [];
        handler(call.request, this.relayFor(call.metadata), missing).then(
          (response) => callback(null, response, missingMetadata(missing)),
          (error: unknown) => {
            const failure = grpcError(error);
            if (failure.code === status.INTERNAL) logger.warn({ err: error }, `${name} failed`);
            callback(failure);
          },
        );
      };
    server.addService(observerServiceDefinition, {
      GetFlows: (call: GetFlowsCall) => {
        this.getFlows(call)
          .catch((error: unknown) => {
            const failure = grpcError(error);
            if (failure.code === status.INTERNAL) logger.warn({ err: error }, 'GetFlows failed');
            call.emit('error', failure);
          })
          .finally(() => this.calls.delete(call));
      },
      GetAggregates: unary<GetAggregatesRequest, GetAggregatesResponse>('GetAggregates', (r, relay, missing) => this.getAggregates(r, relay, missing)),
      GetStatus: unary<GetStatusRequest, GetStatusResponse>('GetStatus', (_, relay, missing) => this.getStatus(relay, missing)),
    });
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host}:${this.options.port}`, secured.credentials, (error, port) => {
        if (error) reject(error);
        else resolve(port);
      });
    });
  }

  /** History of the range: from the store, else from the ring (filtered on flow time too). */
  private async history(request: GetFlowsRequest, matches: FlowPredicate): Promise<BufferedFlow[]> {
    const untilNs = request.follow ? 0n : request.untilNs;
    if (this.options.store) {
      const stored: StoredFlow[] = await this.options.store.flows({ sinceNs: request.sinceNs, untilNs, filter: request.query, last: request.last, limit: request.last > 0 ? 0 : request.limit });
      return stored;
    }
    this.options.ring.trim(nowNs());
    const out: BufferedFlow[] = [];
    for (const flow of this.options.ring.since(0n)) {
      const t = flow.record.endNs;
      if (t < request.sinceNs || (untilNs > 0n && t >= untilNs) || !matches(flow.record)) continue;
      out.push(flow);
    }
    out.sort((a, b) => (a.record.endNs < b.record.endNs ? -1 : a.record.endNs > b.record.endNs ? 1 : 0));
    return request.last > 0 ? out.slice(-request.last) : out;
  }

  private async getFlows(call: GetFlowsCall): Promise<void> {
    const request = call.request;
    const matches = predicateOf(request.query);
    const relay = this.relayFor(call.metadata);
    const missing: Missing = [];
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
    const enqueue = (flow: BufferedFlow) => {
      if (queue.length >= maxQueue) overflow = true;
      else queue.push(flow);
      wake?.();
    };
    // Subscribe before reading the history, so no record falls between the two; records in
    // both (received since the subscription) are sent once, from the history.
    const subscribedNs = nowNs();
    const unsubscribe = request.follow
      ? this.options.ring.subscribe((flow) => {
          if (matches(flow.record)) enqueue(flow);
        })
      : () => false;
    // The other replicas' live flows likewise, each subscribed before its history is asked for
    // (they filter them; a replica that starts later, or comes back, joins at the next rescan).
    const following = new Map<string, PeerFollow>();
    const follow = async (peer: ObserverPeer): Promise<boolean> => {
      if (!relay) return false;
      const stream = relay.follow(peer, request, enqueue, (error) => {
        if (following.get(peer.instance) !== stream) return;
        following.delete(peer.instance);
        relay.failed(peer, error, missing);
      });
      following.set(peer.instance, stream);
      try {
        await stream.subscribed;
        return true;
      } catch (error) {
        following.delete(peer.instance);
        stream.cancel();
        relay.failed(peer, error, missing);
        return false;
      }
    };
    let peers = relay?.peers() ?? [];
    const rescan =
      request.follow && relay
        ? setInterval(() => {
            for (const peer of relay.peers()) if (!following.has(peer.instance)) void follow(peer);
          }, PEER_RESCAN_MS)
        : undefined;
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
      if (request.follow) {
        const subscribed = await Promise.all(peers.map(follow));
        peers = peers.filter((_, i) => subscribed[i]);
        // A follower learns that it is subscribed (every record received from now on, by any
        // replica, reaches it) from the response headers, sent before the history: the
        // console's live tail says "waiting for new flows" only then. They name the replicas
        // that could not be followed.
        call.sendMetadata(missingMetadata(missing));
      }
      const [own, others] = await Promise.all([
        this.history(request, matches),
        relay && peers.length > 0 ? relay.history(peers, { ...request, follow: false, untilNs: request.follow ? 0n : request.untilNs }, missing) : Promise.resolve([]),
      ]);
      const snapshot = others.length > 0 ? mergeFlows([own, others], request) : own;
      const seen = new Set<string>();
      for (const flow of snapshot) if (flow.receivedNs >= subscribedNs - 2_000_000_000n && flow.record.id) seen.add(flow.record.id);
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
          if (seen.size > 0 && flow.record.id && seen.delete(flow.record.id)) continue;
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
      if (rescan) clearInterval(rescan);
      for (const stream of following.values()) stream.cancel();
      following.clear();
      call.off('cancelled', onGone);
      call.off('close', onGone);
    }
    if (!cancelled) call.end(missingMetadata(missing));
  }

  private async getAggregates(request: GetAggregatesRequest, relay: ObserverRelay | undefined, missing: Missing): Promise<GetAggregatesResponse> {
    const store = this.options.store;
    if (!store) throw new BadRequest('aggregates need the flow store, which is off on this exporter (--store)');
    const pick = <T extends string>(value: string, allowed: readonly T[], dflt: T, what: string): T => {
      if (value === '') return dflt;
      if (!(allowed as readonly string[]).includes(value)) throw new BadRequest(`unknown ${what} "${value}" (one of ${allowed.join(', ')})`);
      return value as T;
    };
    const level = pick<AggregateLevel>(request.level, aggregateLevels, 'workload', 'level');
    const side = pick<AggregateSide>(request.side, aggregateSides, 'pair', 'side');
    const orderBy = pick<AggregateMetric>(request.orderBy, aggregateMetrics, 'bytes', 'metric');
    const untilNs = request.untilNs > 0n ? request.untilNs : nowNs();
    const peers = relay?.peers() ?? [];
    // Each replica's rows of the same range, unlimited: a group pair's records are spread over
    // every replica, so only the sums of all of them can be ordered and cut.
    const [rows, others] = await Promise.all([
      store.aggregate({ sinceNs: request.sinceNs, untilNs, filter: request.query, level, side, orderBy, limit: peers.length > 0 ? 0 : request.limit }),
      relay && peers.length > 0 ? relay.aggregates(peers, { ...request, untilNs }, missing) : Promise.resolve([]),
    ]);
    const own = rows.map((r) => create(AggregateSchema, r));
    return create(GetAggregatesResponseSchema, {
      sinceNs: request.sinceNs,
      untilNs,
      aggregates: peers.length > 0 ? mergeAggregates([own, ...others], orderBy, request.limit) : own,
    });
  }

  private async getStatus(relay: ObserverRelay | undefined, missing: Missing): Promise<GetStatusResponse> {
    const peers = relay?.peers() ?? [];
    const [own, others] = await Promise.all([this.ownStatus(), relay && peers.length > 0 ? relay.statuses(peers, missing) : Promise.resolve([])]);
    mergeStoreStatus(own, others);
    return own;
  }

  private async ownStatus(): Promise<GetStatusResponse> {
    const { store, status: watch, storeLimits } = this.options;
    const stats = store?.stats();
    return create(GetStatusResponseSchema, {
      nowNs: nowNs(),
      instances: (watch?.instances() ?? []).map((i) => create(InstanceStatusSchema, i)),
      dlq: (await watch?.dlq()) ?? {},
      store: create(StoreStatusSchema, {
        enabled: store !== undefined,
        records: BigInt(stats?.records ?? 0),
        bytes: BigInt(stats?.bytes ?? 0),
        maxBytes: BigInt(storeLimits?.maxBytes ?? 0),
        retentionNs: BigInt(storeLimits?.retentionMs ?? 0) * 1_000_000n,
        oldestNs: stats?.oldestNs ?? 0n,
        newestNs: stats?.newestNs ?? 0n,
        segments: stats?.segments ?? 0,
        expiredRecords: BigInt(stats?.expiredRecords ?? 0),
      }),
    });
  }

  /** Ends open streams (the client sees a normal end) and stops listening. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    for (const end of this.calls.values()) end();
    this.options.relay?.close();
    await new Promise<void>((resolve) => {
      server.tryShutdown(() => resolve());
      setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000).unref();
    });
  }
}
