// The Prometheus sink: workload-to-workload traffic on the exporter's /metrics, with a cap on the
// number of label sets so a noisy cluster cannot blow up Prometheus (dropped series are counted).
// Records are added into per-series slots of one Float64Array, found by the label bytes as they
// sit in the record (no strings, no prom-client call per record); the metrics read those slots
// when Prometheus scrapes. Drops and DNS: totals and a DNS latency histogram on the same series,
// drops by kernel reason and DNS responses by rcode in two tables keyed by the series' label bytes
// plus the reason / rcode (bounded sets: never a DNS name).
import { BytesMap, FlowFields, IpProtocol, Vantage } from '@kappa/contracts';
import type { MessageCursor } from '@kappa/contracts';
import { Counter, Gauge } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import { ExportRecord, stringEnd, stringStart, uint64Number } from '../record/export-record.js';
import type { EndCursors } from '../record/export-record.js';
import type { ExportBatch, FlowSink } from './sink.js';

const F = FlowFields.FlowRecord;
const K = FlowFields.Kube;
const T = FlowFields.TcpStats;
const A = FlowFields.AppLatency;
const D = FlowFields.Dns;
const DR = FlowFields.Drops;

type Labels = Record<'src_namespace' | 'src_workload' | 'dst_namespace' | 'dst_workload' | 'protocol' | 'vantage', string>;

const RTT_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1];
const DNS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
// Slots of one series.
const BYTES = 0;
const REVERSE_BYTES = 1;
const PACKETS = 2;
const REVERSE_PACKETS = 3;
const RETRANSMITS = 4;
const LATENCY_SUM = 5;
const REQUESTS = 6;
const DROPPED_PACKETS = 7;
const DROPPED_BYTES = 8;
const DNS_QUERIES = 9;
const DNS_LATENCY_SUM = 10;
const DNS_LATENCY_COUNT = 11;
const RTT_SUM = 12;
const RTT_COUNT = 13;
const RTT_BUCKET = 14;
const DNS_LATENCY_BUCKET = RTT_BUCKET + RTT_BUCKETS.length;
const STRIDE = DNS_LATENCY_BUCKET + DNS_BUCKETS.length;

/** DNS response codes by number (RFC 1035, 2136, 8490), as label values. */
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE', 'DSOTYPENI'];
const RCODE_BYTES = RCODE_NAMES.map((n) => new TextEncoder().encode(n));
const NOERROR = 0;
const NXDOMAIN = 3;
/** Label value of the packets a record dropped for reasons other than its main one, and of failures with another rcode. */
const OTHER = new TextEncoder().encode('other');

export interface PrometheusSinkOptions {
  registry: Registry;
  maxSeries: number;
}

function protocolName(p: number): string {
  const name = IpProtocol[p];
  return name && p !== 0 ? name.replace(/^IP_PROTOCOL_/, '').toLowerCase() : String(p);
}

function vantageName(v: number): string {
  return v === Vantage.SRC ? 'src' : v === Vantage.DST ? 'dst' : 'unspecified';
}

const EXTERNAL = new TextEncoder().encode('external');
const UNKNOWN = new TextEncoder().encode('unknown');

/** A series' labels and its slots' values, for one scrape. */
interface Sample {
  labels: Labels;
  at: number;
}

/** One metric family read from the series table at scrape time (prom-client's metric interface). */
class SeriesMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly read: (samples: Sample[], values: Float64Array) => { value: number; labels: object; sharedLabels?: object; metricName?: string }[],
    private readonly table: () => { samples: Sample[]; values: Float64Array },
  ) {}

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: unknown[] }> {
    const { samples, values } = this.table();
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read(samples, values) });
  }

  reset(): void {}
}

/**
 * Counters of a flow series split by one more label (drop reason, DNS rcode): keyed by the
 * series' label bytes plus the label's bytes, at most `max` label sets (refusals counted).
 */
class SplitTable {
  private readonly map = new BytesMap<number>();
  readonly samples: Sample[] = [];
  values = new Float64Array(64);
  refused = 0;
  private key = new Uint8Array(256);

  constructor(
    readonly label: string,
    private readonly max: number,
  ) {}

  /** Adds `value` to the series (`base` labels, key bytes base[0, baseLength)) with label = bytes[start, end). */
  add(base: Uint8Array, baseLength: number, labels: Labels, bytes: Uint8Array, start: number, end: number, value: number): void {
    const length = baseLength + end - start;
    if (length > this.key.length) this.key = new Uint8Array(2 * length);
    const key = this.key;
    key.set(base.subarray(0, baseLength));
    for (let i = start; i < end; i++) key[baseLength + i - start] = bytes[i]!;
    let at = this.map.get(key, 0, length);
    if (at === undefined) {
      if (this.samples.length >= this.max) {
        this.refused++;
        return;
      }
      at = this.samples.length;
      if (at >= this.values.length) {
        const grown = new Float64Array(this.values.length * 2);
        grown.set(this.values);
        this.values = grown;
      }
      this.samples.push({ labels: { ...labels, [this.label]: new TextDecoder().decode(bytes.subarray(start, end)) }, at });
      this.map.set(key, 0, length, at);
    }
    this.values[at] = this.values[at]! + value;
  }
}

export class PrometheusSink implements FlowSink {
  readonly name = 'prometheus';
  private readonly series = new BytesMap<number>();
  private readonly samples: Sample[] = [];
  private values = new Float64Array(STRIDE * 64);
  private readonly dropped: Counter;
  private readonly splitDropped: Counter<'table'>;
  private readonly seriesGauge: Gauge;
  private readonly record = new ExportRecord();
  private readonly dropReasons: SplitTable;
  private readonly dnsRcodes: SplitTable;
  /** The label key of the record at hand: src ns, src workload, dst ns, dst workload, protocol, vantage. */
  private key = new Uint8Array(1024);
  private keyLength = 0;

  constructor(private readonly options: PrometheusSinkOptions) {
    const registers = [options.registry];
    const table = () => ({ samples: this.samples, values: this.values });
    const counter = (name: string, help: string, slot: number) =>
      new SeriesMetric(name, help, 'counter', (samples, values) => samples.map((s) => ({ value: values[s.at + slot]!, labels: s.labels })), table);
    this.dropReasons = new SplitTable('reason', options.maxSeries);
    this.dnsRcodes = new SplitTable('rcode', options.maxSeries);
    const split = (name: string, help: string, split: SplitTable) =>
      new SeriesMetric(name, help, 'counter', (samples, values) => samples.map((s) => ({ value: values[s.at]!, labels: s.labels })), () => ({ samples: split.samples, values: split.values }));
    /** As prom-client writes a histogram: cumulative buckets, +Inf, sum, count. */
    const histogram = (name: string, help: string, buckets: number[], bucketSlot: number, sumSlot: number, countSlot: number, skipEmpty: boolean) =>
      new SeriesMetric(
        name,
        help,
        'histogram',
        (samples, values) =>
          samples.flatMap((s) => {
            const count = values[s.at + countSlot]!;
            if (count === 0 && skipEmpty) return [];
            let cumulative = 0;
            const out = buckets.map((le, b) => {
              cumulative += values[s.at + bucketSlot + b]!;
              return { value: cumulative, labels: { le }, sharedLabels: s.labels, metricName: `${name}_bucket` };
            });
            return [
              ...out,
              { value: count, labels: { le: '+Inf' }, sharedLabels: s.labels, metricName: `${name}_bucket` },
              { value: values[s.at + sumSlot]!, labels: {}, sharedLabels: s.labels, metricName: `${name}_sum` },
              { value: count, labels: {}, sharedLabels: s.labels, metricName: `${name}_count` },
            ];
          }),
        table,
      );
    const metrics = [
      counter('kappa_flow_bytes_total', 'Bytes from src (initiator) to dst (responder), IP bytes on the wire', BYTES),
      counter('kappa_flow_reverse_bytes_total', 'Bytes from dst (responder) back to src (initiator)', REVERSE_BYTES),
      counter('kappa_flow_packets_total', 'Packets from src to dst', PACKETS),
      counter('kappa_flow_reverse_packets_total', 'Packets from dst back to src', REVERSE_PACKETS),
      counter('kappa_flow_retransmits_total', 'TCP segments retransmitted', RETRANSMITS),
      counter('kappa_flow_app_latency_seconds_total', 'Sum of request→response latencies at the socket layer', LATENCY_SUM),
      counter('kappa_flow_app_requests_total', 'Request→response pairs at the socket layer', REQUESTS),
      histogram('kappa_flow_rtt_seconds', 'Smoothed TCP round-trip time at the end of each record interval', RTT_BUCKETS, RTT_BUCKET, RTT_SUM, RTT_COUNT, false),
      counter('kappa_flow_dropped_packets_total', 'Packets of the flows the kernel dropped (skb:kfree_skb with a drop reason), at this vantage', DROPPED_PACKETS),
      counter('kappa_flow_dropped_bytes_total', 'IP bytes of the packets the kernel dropped', DROPPED_BYTES),
      split(
        'kappa_flow_drop_reason_packets_total',
        "Dropped packets by the kernel's drop reason (enum skb_drop_reason without SKB_DROP_REASON_; a record names its most frequent reason, its other drops count as reason=\"other\")",
        this.dropReasons,
      ),
      counter('kappa_flow_dns_queries_total', 'DNS queries of the flows', DNS_QUERIES),
      split(
        'kappa_flow_dns_responses_total',
        'DNS responses by rcode (NOERROR, NXDOMAIN, or the first failing rcode of a record; its further failures with another rcode count as rcode="other")',
        this.dnsRcodes,
      ),
      histogram(
        'kappa_flow_dns_latency_seconds',
        "DNS query→response latency at this node's socket hooks; sum and count are exact, a record's exchanges fall in the bucket of their mean",
        DNS_BUCKETS,
        DNS_LATENCY_BUCKET,
        DNS_LATENCY_SUM,
        DNS_LATENCY_COUNT,
        true,
      ),
    ];
    for (const metric of metrics) options.registry.registerMetric(metric as unknown as Counter);
    this.dropped = new Counter({
      name: 'kappa_exporter_series_dropped_total',
      help: 'Records not counted in kappa_flow_* because their label set would exceed --prometheus-max-series',
      registers,
    });
    this.splitDropped = new Counter<'table'>({
      name: 'kappa_exporter_split_series_dropped_total',
      help: 'Drop-reason and DNS-rcode counts not kept because their table (kappa_flow_drop_reason_packets_total, kappa_flow_dns_responses_total) was at --prometheus-max-series label sets',
      labelNames: ['table'],
      registers,
    });
    this.seriesGauge = new Gauge({ name: 'kappa_exporter_series', help: 'Label sets of kappa_flow_* in use', registers });
  }

  write(batch: ExportBatch): Promise<void> {
    const view = batch.view;
    let dropped = 0;
    for (let i = 0; i < view.length; i++) {
      if (!this.count(this.record.load(view, i))) dropped++;
    }
    if (dropped > 0) this.dropped.inc(dropped);
    for (const table of [this.dropReasons, this.dnsRcodes]) {
      if (table.refused > 0) this.splitDropped.inc({ table: table.label }, table.refused);
      table.refused = 0;
    }
    this.seriesGauge.set(this.samples.length);
    return Promise.resolve();
  }

  /** Adds the record to its series; false when the series cap refused a new series. */
  private count(r: ExportRecord): boolean {
    const record = r.record;
    const protocol = record.uint32(F.protocol);
    const vantage = record.int32(F.vantage);
    this.keyLength = 0;
    this.appendEnd(r.end('src'));
    this.appendEnd(r.end('dst'));
    this.appendNumber(protocol);
    this.appendNumber(vantage);
    let at = this.series.get(this.key, 0, this.keyLength);
    if (at === undefined) {
      if (this.samples.length >= this.options.maxSeries) return false;
      at = this.addSeries(r, protocol, vantage);
    }
    const values = this.values;
    values[at + BYTES] = values[at + BYTES]! + uint64Number(record, F.bytes);
    values[at + REVERSE_BYTES] = values[at + REVERSE_BYTES]! + uint64Number(record, F.reverseBytes);
    values[at + PACKETS] = values[at + PACKETS]! + uint64Number(record, F.packets);
    values[at + REVERSE_PACKETS] = values[at + REVERSE_PACKETS]! + uint64Number(record, F.reversePackets);
    if (record.has(F.tcp)) {
      const tcp = r.tcp;
      values[at + RETRANSMITS] = values[at + RETRANSMITS]! + tcp.uint32(T.retransmits);
      const srttUs = tcp.uint32(T.srttUs);
      if (srttUs > 0) {
        const seconds = srttUs / 1e6;
        values[at + RTT_SUM] = values[at + RTT_SUM]! + seconds;
        values[at + RTT_COUNT] = values[at + RTT_COUNT]! + 1;
        for (let b = 0; b < RTT_BUCKETS.length; b++) {
          if (seconds <= RTT_BUCKETS[b]!) {
            values[at + RTT_BUCKET + b] = values[at + RTT_BUCKET + b]! + 1;
            break;
          }
        }
      }
    }
    if (record.has(F.appLatency)) {
      const latency = r.appLatency;
      const requests = uint64Number(latency, A.count);
      if (requests > 0) {
        values[at + REQUESTS] = values[at + REQUESTS]! + requests;
        values[at + LATENCY_SUM] = values[at + LATENCY_SUM]! + uint64Number(latency, A.sumUs) / 1e6;
      }
    }
    if (record.has(F.drops)) this.countDrops(r, at);
    if (record.has(F.dns)) this.countDns(r, at);
    return true;
  }

  /** Dropped packets and bytes on the series; packets by reason: the record's reason, the rest "other". */
  private countDrops(r: ExportRecord, at: number): void {
    const drops = r.drops;
    const values = this.values;
    const packets = uint64Number(drops, DR.packets);
    values[at + DROPPED_PACKETS] = values[at + DROPPED_PACKETS]! + packets;
    values[at + DROPPED_BYTES] = values[at + DROPPED_BYTES]! + uint64Number(drops, DR.bytes);
    const labels = this.samples[at / STRIDE]!.labels;
    const start = stringStart(drops, DR.reason);
    const end = stringEnd(drops, DR.reason);
    const named = end > start ? Math.min(uint64Number(drops, DR.reasonPackets), packets) : 0;
    if (named > 0) this.dropReasons.add(this.key, this.keyLength, labels, drops.bytes, start, end, named);
    if (packets > named) this.dropReasons.add(this.key, this.keyLength, labels, OTHER, 0, OTHER.length, packets - named);
  }

  /**
   * DNS queries, latency (sum, count, and the record's exchanges in the bucket of their mean) on the
   * series; responses by rcode: NOERROR (responses − failed), NXDOMAIN, and the record's first
   * failing rcode for its other failures ("other" when that rcode is NXDOMAIN or unknown).
   */
  private countDns(r: ExportRecord, at: number): void {
    const dns = r.dns;
    const values = this.values;
    values[at + DNS_QUERIES] = values[at + DNS_QUERIES]! + uint64Number(dns, D.queries);
    const exchanges = uint64Number(dns, D.latencyCount);
    if (exchanges > 0) {
      const seconds = uint64Number(dns, D.latencySumUs) / 1e6;
      values[at + DNS_LATENCY_SUM] = values[at + DNS_LATENCY_SUM]! + seconds;
      values[at + DNS_LATENCY_COUNT] = values[at + DNS_LATENCY_COUNT]! + exchanges;
      const mean = seconds / exchanges;
      for (let b = 0; b < DNS_BUCKETS.length; b++) {
        if (mean <= DNS_BUCKETS[b]!) {
          values[at + DNS_LATENCY_BUCKET + b] = values[at + DNS_LATENCY_BUCKET + b]! + exchanges;
          break;
        }
      }
    }
    const responses = uint64Number(dns, D.responses);
    if (responses === 0) return;
    const failed = Math.min(uint64Number(dns, D.failed), responses);
    const nxdomain = Math.min(uint64Number(dns, D.nxdomain), failed);
    const labels = this.samples[at / STRIDE]!.labels;
    const ok = RCODE_BYTES[NOERROR]!;
    const nx = RCODE_BYTES[NXDOMAIN]!;
    if (responses > failed) this.dnsRcodes.add(this.key, this.keyLength, labels, ok, 0, ok.length, responses - failed);
    if (nxdomain > 0) this.dnsRcodes.add(this.key, this.keyLength, labels, nx, 0, nx.length, nxdomain);
    if (failed > nxdomain) {
      const rcode = dns.uint32(D.rcode);
      const name = rcode !== NOERROR && rcode !== NXDOMAIN ? (RCODE_BYTES[rcode] ?? OTHER) : OTHER;
      this.dnsRcodes.add(this.key, this.keyLength, labels, name, 0, name.length, failed - nxdomain);
    }
  }

  private addSeries(r: ExportRecord, protocol: number, vantage: number): number {
    const src = workloadOf(r.end('src').kube);
    const dst = workloadOf(r.end('dst').kube);
    const labels: Labels = {
      src_namespace: src.namespace,
      src_workload: src.workload,
      dst_namespace: dst.namespace,
      dst_workload: dst.workload,
      protocol: protocolName(protocol),
      vantage: vantageName(vantage),
    };
    const at = this.samples.length * STRIDE;
    if (at + STRIDE > this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.samples.push({ labels, at });
    this.series.set(this.key, 0, this.keyLength, at);
    return at;
  }

  /** An end's workload and namespace as label bytes: as workloadOf() below, without strings. */
  private appendEnd(end: EndCursors): void {
    const kube = end.kube;
    if (kube.byteLength(K.workloadNamespace) > 0) this.appendString(kube, K.workloadNamespace);
    else this.appendString(kube, K.objectNamespace);
    this.appendByte(0);
    if (kube.byteLength(K.workloadName) > 0) this.appendString(kube, K.workloadName);
    else if (kube.byteLength(K.objectName) > 0) this.appendString(kube, K.objectName);
    else this.appendBytes(kube.equalsAscii(K.objectType, 'external') ? EXTERNAL : UNKNOWN);
    this.appendByte(0);
  }

  private appendString(cursor: MessageCursor, field: number): void {
    const start = stringStart(cursor, field);
    const end = stringEnd(cursor, field);
    this.reserve(end - start);
    const bytes = cursor.bytes;
    for (let i = start; i < end; i++) this.key[this.keyLength++] = bytes[i]!;
  }

  private appendBytes(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.key.set(bytes, this.keyLength);
    this.keyLength += bytes.length;
  }

  private appendByte(b: number): void {
    this.reserve(1);
    this.key[this.keyLength++] = b;
  }

  private appendNumber(n: number): void {
    this.reserve(4);
    this.key[this.keyLength++] = n & 0xff;
    this.key[this.keyLength++] = (n >>> 8) & 0xff;
    this.key[this.keyLength++] = (n >>> 16) & 0xff;
    this.key[this.keyLength++] = n >>> 24;
  }

  private reserve(n: number): void {
    if (this.keyLength + n <= this.key.length) return;
    const grown = new Uint8Array(Math.max(this.key.length * 2, this.keyLength + n));
    grown.set(this.key.subarray(0, this.keyLength));
    this.key = grown;
  }

  async close(): Promise<void> {}
}

/** An end's workload: the owning workload, else the object (pod, service, node), else "external" / "unknown". */
function workloadOf(kube: MessageCursor): { namespace: string; workload: string } {
  const workload = kube.string(K.workloadName) || kube.string(K.objectName) || (kube.equalsAscii(K.objectType, 'external') ? 'external' : 'unknown');
  const namespace = kube.string(K.workloadNamespace) || kube.string(K.objectNamespace);
  return { namespace, workload };
}
