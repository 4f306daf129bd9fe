// The relay: exporter replicas share the durable of kappa.flow.joined.>, so each holds only its
// share of the flows in its ring and store. An Observer call that does not ask for one replica's
// share alone is answered from all of them: the others, heard on kappa.status with the Observer
// address they advertise, are asked over gRPC (scope 'local', so nothing is relayed twice) and the
// answers merged with this replica's own. As Hubble Relay does, but with no process of its own:
// every replica relays, so any of them gives the whole picture.
import type { ClientReadableStream, Metadata, ServiceError } from '@grpc/grpc-js';
import { AggregateSchema, ObserverClient, create } from '@kappa/contracts';
import type { Aggregate, GetAggregatesRequest, GetFlowsRequest, GetFlowsResponse, GetStatusResponse, GrpcClientSecurity } from '@kappa/contracts';
import type { Counter, Logger, Registry } from '@kappa/observability';
import { Counter as PromCounter } from '@kappa/observability';
import type { AggregateMetric } from '../store/store.js';
import type { BufferedFlow } from './ring.js';
import type { StatusWatch } from './status-watch.js';

export interface ObserverPeer {
  instance: string;
  /** host:port of its Observer. */
  address: string;
}

/** The heartbeat feature an exporter advertises its Observer under. */
export const OBSERVER_FEATURE = 'observer';
/** A replica silent for longer than this is not asked (heartbeats come every 2 s). */
const PEER_SILENCE_NS = 10_000_000_000n;

/** The other exporter replicas that advertise an Observer and were heard lately. */
export function peersFromStatus(watch: StatusWatch, ownInstance: string): () => ObserverPeer[] {
  return () => {
    const now = BigInt(Date.now()) * 1_000_000n;
    const peers: ObserverPeer[] = [];
    for (const { last } of watch.instances(now)) {
      const address = last.features[OBSERVER_FEATURE];
      if (last.stage !== 'exporter' || last.instance === ownInstance || !address || now - last.sentNs > PEER_SILENCE_NS) continue;
      peers.push({ instance: last.instance, address });
    }
    return peers.sort((a, b) => (a.instance < b.instance ? -1 : 1));
  };
}

export interface ObserverRelayOptions {
  peers: () => ObserverPeer[];
  security: GrpcClientSecurity;
  /** The TLS name the peers' certificates carry (they are reached by address). */
  tlsName?: string | undefined;
  logger: Logger;
  registry?: Registry;
  /** Deadline of one peer's history, aggregates or status. */
  timeoutMs?: number;
}

/** What a relayed answer lacks: one line per replica that did not answer. */
export type Missing = string[];

/** A peer's live flows for a follower: `subscribed` settles once the peer sends them all. */
export interface PeerFollow {
  peer: ObserverPeer;
  subscribed: Promise<void>;
  cancel(): void;
}

function why(error: unknown): string {
  const e = error as Partial<ServiceError>;
  return (e.details || e.message || String(error)).split('\n')[0]!.trim();
}

export class ObserverRelay {
  private readonly clients = new Map<string, ObserverClient>();
  private readonly failures: Counter | undefined;

  constructor(private readonly options: ObserverRelayOptions) {
    this.failures = options.registry
      ? new PromCounter({
          name: 'kappa_exporter_relay_peer_failures_total',
          help: 'Observer calls another exporter replica did not answer (the relayed answer then lacks its flows and says so)',
          labelNames: ['peer'],
          registers: [options.registry],
        })
      : undefined;
  }

  /** The replicas to ask now; clients of replicas gone are closed. */
  peers(): ObserverPeer[] {
    const peers = this.options.peers();
    const live = new Set(peers.map((p) => p.address));
    for (const [address, client] of this.clients) {
      if (live.has(address)) continue;
      client.close();
      this.clients.delete(address);
    }
    return peers;
  }

  private client(peer: ObserverPeer): ObserverClient {
    let client = this.clients.get(peer.address);
    if (!client) {
      client = new ObserverClient(peer.address, this.options.security, {
        scope: 'local',
        ...(this.options.tlsName ? { tlsName: this.options.tlsName } : {}),
        unaryTimeoutMs: this.timeoutMs,
      });
      this.clients.set(peer.address, client);
    }
    return client;
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 30_000;
  }

  /**
   * A replica that did not answer: counted, one line per replica in `missing` (a follower that
   * retries a replica every few seconds keeps its latest reason), logged once per call.
   */
  failed(peer: ObserverPeer, error: unknown, missing: Missing): void {
    const prefix = `${peer.instance} (`;
    const line = `${prefix}${peer.address}): ${why(error)}`;
    this.failures?.inc({ peer: peer.instance });
    const seen = missing.findIndex((m) => m.startsWith(prefix));
    if (seen >= 0) {
      missing[seen] = line;
      return;
    }
    missing.push(line);
    this.options.logger.warn({ peer: peer.instance, address: peer.address, err: why(error) }, 'relay: another exporter replica did not answer; the answer lacks its flows');
  }

  /** Every peer's flows of a range (the request without follow), each peer's own limit applied. */
  async history(peers: ObserverPeer[], request: GetFlowsRequest, missing: Missing): Promise<BufferedFlow[]> {
    const answers = await Promise.all(
      peers.map(async (peer) => {
        try {
          return await this.collect(peer, { ...request, follow: false });
        } catch (error) {
          this.failed(peer, error, missing);
          return [];
        }
      }),
    );
    return answers.flat();
  }

  private collect(peer: ObserverPeer, request: GetFlowsRequest): Promise<BufferedFlow[]> {
    return new Promise((resolve, reject) => {
      const flows: BufferedFlow[] = [];
      const stream = this.client(peer).flows(request);
      const timer = setTimeout(() => {
        stream.cancel();
        reject(new Error(`no complete answer within ${this.timeoutMs / 1000} s`));
      }, this.timeoutMs);
      stream.on('data', (r: GetFlowsResponse) => {
        if (r.flow) flows.push({ record: r.flow, receivedNs: r.receivedNs });
      });
      stream.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      stream.on('end', () => {
        clearTimeout(timer);
        resolve(flows);
      });
    });
  }

  /**
   * A peer's flows from now on, for a follower: `onFlow` gets each, `onGone` the stream's end
   * (the peer stopped or went away). `subscribed` resolves when the peer sends its response
   * headers, which it does once every record it receives from then on reaches this stream.
   */
  follow(peer: ObserverPeer, request: GetFlowsRequest, onFlow: (flow: BufferedFlow) => void, onGone: (error: unknown) => void): PeerFollow {
    // A range that starts after every flow time: no history from the peer, only what arrives.
    const stream: ClientReadableStream<GetFlowsResponse> = this.client(peer).flows({ ...request, follow: true, sinceNs: 0xffff_ffff_ffff_ffffn, last: 0 });
    let cancelled = false;
    const subscribed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not subscribed within ${this.timeoutMs / 1000} s`)), this.timeoutMs);
      stream.once('metadata', (_: Metadata) => {
        clearTimeout(timer);
        resolve();
      });
      stream.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    subscribed.catch(() => undefined);
    stream.on('data', (r: GetFlowsResponse) => {
      if (r.flow) onFlow({ record: r.flow, receivedNs: r.receivedNs });
    });
    stream.on('error', (error) => {
      if (!cancelled) onGone(error);
    });
    stream.on('end', () => {
      if (!cancelled) onGone(new Error('its stream ended'));
    });
    return {
      peer,
      subscribed,
      cancel: () => {
        cancelled = true;
        stream.cancel();
      },
    };
  }

  /** Every peer's aggregates of the request, unlimited (the merge applies the limit). */
  async aggregates(peers: ObserverPeer[], request: GetAggregatesRequest, missing: Missing): Promise<Aggregate[][]> {
    return Promise.all(
      peers.map(async (peer) => {
        try {
          return (await this.client(peer).aggregates({ ...request, limit: 0 })).response.aggregates;
        } catch (error) {
          this.failed(peer, error, missing);
          return [];
        }
      }),
    );
  }

  async statuses(peers: ObserverPeer[], missing: Missing): Promise<GetStatusResponse[]> {
    const answers = await Promise.all(
      peers.map(async (peer) => {
        try {
          return (await this.client(peer).status()).response;
        } catch (error) {
          this.failed(peer, error, missing);
          return undefined;
        }
      }),
    );
    return answers.filter((a): a is GetStatusResponse => a !== undefined);
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

/** Flows of several replicas as one range: each record once (a batch redelivered to another replica after a lost ack reaches two stores), by flow time. */
export function mergeFlows(sources: BufferedFlow[][], request: Pick<GetFlowsRequest, 'last' | 'limit'>): BufferedFlow[] {
  const seen = new Set<string>();
  const out: BufferedFlow[] = [];
  for (const flows of sources) {
    for (const flow of flows) {
      const id = flow.record.id;
      if (id) {
        if (seen.has(id)) continue;
        seen.add(id);
      }
      out.push(flow);
    }
  }
  out.sort((a, b) => (a.record.endNs < b.record.endNs ? -1 : a.record.endNs > b.record.endNs ? 1 : 0));
  if (request.last > 0) return out.slice(-request.last);
  if (request.limit > 0) return out.slice(0, request.limit);
  return out;
}

const metricOf: Record<AggregateMetric, (a: Aggregate) => bigint | number> = {
  bytes: (a) => a.bytes + a.reverseBytes,
  packets: (a) => a.packets + a.reversePackets,
  retransmits: (a) => a.retransmits,
  rtt: (a) => a.rttAvgUs,
  dropped: (a) => a.droppedPackets,
};

function groupKey(a: Aggregate): string {
  const g = (x: Aggregate['src']) => `${x?.namespace ?? ''}\0${x?.name ?? ''}\0${x?.external ? 1 : 0}`;
  return `${g(a.src)}\0\0${g(a.dst)}`;
}

/**
 * Aggregates of several replicas as one: the sums of each group pair added (each record is in
 * one replica's store), the RTT mean weighted by the records that carry one, the maximum the
 * largest; ordered and cut as the store orders and cuts its own.
 */
export function mergeAggregates(sources: Aggregate[][], orderBy: AggregateMetric, limit: number): Aggregate[] {
  const merged = new Map<string, Aggregate>();
  for (const rows of sources) {
    for (const row of rows) {
      const key = groupKey(row);
      const into = merged.get(key);
      if (!into) {
        merged.set(key, create(AggregateSchema, row));
        continue;
      }
      into.bytes += row.bytes;
      into.reverseBytes += row.reverseBytes;
      into.packets += row.packets;
      into.reversePackets += row.reversePackets;
      into.retransmits += row.retransmits;
      into.records += row.records;
      into.droppedPackets += row.droppedPackets;
      into.droppedBytes += row.droppedBytes;
      into.rttSumUs += row.rttSumUs;
      into.rttRecords += row.rttRecords;
      into.rttAvgUs = into.rttRecords > 0n ? Number((into.rttSumUs + into.rttRecords / 2n) / into.rttRecords) : 0;
      if (row.rttMaxUs > into.rttMaxUs) into.rttMaxUs = row.rttMaxUs;
    }
  }
  const metric = metricOf[orderBy];
  const name = (a: Aggregate) => groupKey(a);
  const rows = [...merged.values()].sort((a, b) => {
    const x = metric(a);
    const y = metric(b);
    if (x !== y) return x > y ? -1 : 1;
    const p = name(a);
    const q = name(b);
    return p < q ? -1 : p > q ? 1 : 0;
  });
  return limit > 0 ? rows.slice(0, limit) : rows;
}

/** The stores of every replica as one, into `into`: records and bytes added, the range the widest. */
export function mergeStoreStatus(into: GetStatusResponse, others: readonly GetStatusResponse[]): void {
  for (const other of others) {
    const a = into.store!;
    const b = other.store;
    if (!b?.enabled) continue;
    if (!a.enabled) {
      into.store = b;
      continue;
    }
    a.records += b.records;
    a.bytes += b.bytes;
    a.maxBytes += b.maxBytes;
    a.segments += b.segments;
    a.expiredRecords += b.expiredRecords;
    if (b.records > 0n && (a.oldestNs === 0n || (b.oldestNs > 0n && b.oldestNs < a.oldestNs))) a.oldestNs = b.oldestNs;
    if (b.newestNs > a.newestNs) a.newestNs = b.newestNs;
  }
}
