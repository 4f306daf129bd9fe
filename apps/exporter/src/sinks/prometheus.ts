// The Prometheus sink: workload-to-workload traffic on the exporter's /metrics, with a cap on the
// number of label sets so a noisy cluster cannot blow up Prometheus (dropped series are counted).
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { Endpoint, FlowBatch, FlowRecord } from '@kappa/contracts';
import { Counter, Gauge, Histogram } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import type { FlowSink } from './sink.js';

const labelNames = ['src_namespace', 'src_workload', 'dst_namespace', 'dst_workload', 'protocol', 'vantage'] as const;
type FlowLabel = (typeof labelNames)[number];
type Labels = Record<FlowLabel, string>;

interface CounterChild {
  inc(value: number): void;
}

interface SeriesChildren {
  bytes: CounterChild;
  reverseBytes: CounterChild;
  packets: CounterChild;
  reversePackets: CounterChild;
  retransmits: CounterChild;
  rtt: { observe(value: number): void };
  appLatencySum: CounterChild;
  appRequests: CounterChild;
  dnsLatencySum: CounterChild;
  dnsTimed: CounterChild;
  /** Children of the series with one more label (drop reason, DNS rcode), made on first use. */
  dropped: Map<string, { packets: CounterChild; bytes: CounterChild }>;
  dnsResponses: Map<number, CounterChild>;
  labels: Labels;
}

/** DNS response codes by name (RFC 1035, 6895); others are named by number. Bounded: rcode is 4 bits. */
const rcodeNames: Record<number, string> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' };
/** Drop reason labels beyond these many distinct ones are counted under "other" (the kernel has ~100). */
const MAX_REASONS = 256;

export interface PrometheusSinkOptions {
  registry: Registry;
  maxSeries: number;
}

/** An end's workload: the owning workload, else the object (pod, service, node), else "external" / "unknown". */
function workloadOf(end: Endpoint | undefined): { namespace: string; workload: string } {
  const kube = end?.kube;
  const workload = kube?.workloadName || kube?.objectName || (kube?.objectType === 'external' ? 'external' : 'unknown');
  const namespace = kube?.workloadNamespace || kube?.objectNamespace || '';
  return { namespace, workload };
}

function protocolName(p: number): string {
  const name = IpProtocol[p];
  return name && p !== 0 ? name.replace(/^IP_PROTOCOL_/, '').toLowerCase() : String(p);
}

function vantageName(v: Vantage): string {
  return v === Vantage.SRC ? 'src' : v === Vantage.DST ? 'dst' : 'unspecified';
}

export class PrometheusSink implements FlowSink {
  readonly name = 'prometheus';
  private readonly series = new Map<string, SeriesChildren>();
  private readonly bytes: Counter<FlowLabel>;
  private readonly reverseBytes: Counter<FlowLabel>;
  private readonly packets: Counter<FlowLabel>;
  private readonly reversePackets: Counter<FlowLabel>;
  private readonly retransmits: Counter<FlowLabel>;
  private readonly rtt: Histogram<FlowLabel>;
  private readonly appLatencySum: Counter<FlowLabel>;
  private readonly appRequests: Counter<FlowLabel>;
  private readonly droppedPackets: Counter<FlowLabel | 'reason'>;
  private readonly droppedBytes: Counter<FlowLabel | 'reason'>;
  private readonly dnsResponses: Counter<FlowLabel | 'rcode'>;
  private readonly dnsLatencySum: Counter<FlowLabel>;
  private readonly dnsTimed: Counter<FlowLabel>;
  private readonly reasons = new Set<string>();
  private readonly dropped: Counter;
  private readonly seriesGauge: Gauge;

  constructor(private readonly options: PrometheusSinkOptions) {
    const registers = [options.registry];
    const counter = (name: string, help: string) => new Counter<FlowLabel>({ name, help, labelNames: [...labelNames], registers });
    this.bytes = counter('kappa_flow_bytes_total', 'Bytes from src (initiator) to dst (responder), IP bytes on the wire');
    this.reverseBytes = counter('kappa_flow_reverse_bytes_total', 'Bytes from dst (responder) back to src (initiator)');
    this.packets = counter('kappa_flow_packets_total', 'Packets from src to dst');
    this.reversePackets = counter('kappa_flow_reverse_packets_total', 'Packets from dst back to src');
    this.retransmits = counter('kappa_flow_retransmits_total', 'TCP segments retransmitted');
    this.appLatencySum = counter('kappa_flow_app_latency_seconds_total', 'Sum of request→response latencies at the socket layer');
    this.appRequests = counter('kappa_flow_app_requests_total', 'Request→response pairs at the socket layer');
    // Drops and DNS: one more label each, with bounded values (the kernel's drop reasons, DNS
    // response codes); never a DNS name, which would make a series per name.
    const withLabel = <L extends string>(name: string, help: string, label: L) => new Counter<FlowLabel | L>({ name, help, labelNames: [...labelNames, label], registers });
    this.droppedPackets = withLabel('kappa_flow_dropped_packets_total', 'Packets of the flows the kernel dropped, by its drop reason (NETFILTER_DROP, NO_SOCKET, ...)', 'reason');
    this.droppedBytes = withLabel('kappa_flow_dropped_bytes_total', 'IP bytes of the flows the kernel dropped, by its drop reason', 'reason');
    this.dnsResponses = withLabel('kappa_flow_dns_responses_total', 'DNS responses of the flows, by response code (NOERROR, NXDOMAIN, SERVFAIL, ...)', 'rcode');
    this.dnsLatencySum = counter('kappa_flow_dns_latency_seconds_total', 'Sum of DNS query→response latencies (responses matched to their query)');
    this.dnsTimed = counter('kappa_flow_dns_timed_responses_total', 'DNS responses matched to their query (the count of kappa_flow_dns_latency_seconds_total)');
    this.rtt = new Histogram<FlowLabel>({
      name: 'kappa_flow_rtt_seconds',
      help: 'Smoothed TCP round-trip time at the end of each record interval',
      labelNames: [...labelNames],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.dropped = new Counter({
      name: 'kappa_exporter_series_dropped_total',
      help: 'Records not counted in kappa_flow_* because their label set would exceed --prometheus-max-series',
      registers,
    });
    this.seriesGauge = new Gauge({ name: 'kappa_exporter_series', help: 'Label sets of kappa_flow_* in use', registers });
  }

  async write(batch: FlowBatch): Promise<void> {
    for (const record of batch.records) this.count(record);
    this.seriesGauge.set(this.series.size);
  }

  private count(r: FlowRecord): void {
    const src = workloadOf(r.src);
    const dst = workloadOf(r.dst);
    const protocol = protocolName(r.protocol);
    const vantage = vantageName(r.vantage);
    const key = `${src.namespace}\0${src.workload}\0${dst.namespace}\0${dst.workload}\0${protocol}\0${vantage}`;
    let series = this.series.get(key);
    if (!series) {
      if (this.series.size >= this.options.maxSeries) {
        this.dropped.inc();
        return;
      }
      const labels: Labels = {
        src_namespace: src.namespace,
        src_workload: src.workload,
        dst_namespace: dst.namespace,
        dst_workload: dst.workload,
        protocol,
        vantage,
      };
      // Children bound once per label set: no label hashing per record.
      series = {
        bytes: this.bytes.labels(labels),
        reverseBytes: this.reverseBytes.labels(labels),
        packets: this.packets.labels(labels),
        reversePackets: this.reversePackets.labels(labels),
        retransmits: this.retransmits.labels(labels),
        rtt: this.rtt.labels(labels),
        appLatencySum: this.appLatencySum.labels(labels),
        appRequests: this.appRequests.labels(labels),
        dnsLatencySum: this.dnsLatencySum.labels(labels),
        dnsTimed: this.dnsTimed.labels(labels),
        dropped: new Map(),
        dnsResponses: new Map(),
        labels,
      };
      this.series.set(key, series);
    }
    series.bytes.inc(Number(r.bytes));
    series.reverseBytes.inc(Number(r.reverseBytes));
    series.packets.inc(Number(r.packets));
    series.reversePackets.inc(Number(r.reversePackets));
    if (r.tcp) {
      series.retransmits.inc(r.tcp.retransmits);
      if (r.tcp.srttUs > 0) series.rtt.observe(r.tcp.srttUs / 1e6);
    }
    if (r.appLatency && r.appLatency.count > 0n) {
      series.appRequests.inc(Number(r.appLatency.count));
      series.appLatencySum.inc(Number(r.appLatency.sumUs) / 1e6);
    }
    if (r.drops && r.drops.packets > 0n) this.countDrops(series, r.drops.reason, Number(r.drops.packets), Number(r.drops.bytes));
    const dns = r.dns;
    if (dns && dns.responses > 0n) {
      // Responses by rcode: the record keeps NXDOMAIN's count and all failures; the rest succeeded.
      const nx = Number(dns.nxdomain);
      const otherFailed = Number(dns.failed) - nx;
      this.countDns(series, 0, Number(dns.responses) - Number(dns.failed));
      this.countDns(series, 3, nx);
      if (otherFailed > 0) this.countDns(series, dns.rcode === 3 || dns.rcode === 0 ? 2 : dns.rcode, otherFailed);
      if (dns.latencyCount > 0n) {
        series.dnsTimed.inc(Number(dns.latencyCount));
        series.dnsLatencySum.inc(Number(dns.latencySumUs) / 1e6);
      }
    }
  }

  private countDrops(series: SeriesChildren, reason: string, packets: number, bytes: number): void {
    let label = reason || 'unknown';
    if (!this.reasons.has(label)) {
      if (this.reasons.size >= MAX_REASONS) label = 'other';
      else this.reasons.add(label);
    }
    let children = series.dropped.get(label);
    if (!children) {
      const labels = { ...series.labels, reason: label };
      children = { packets: this.droppedPackets.labels(labels), bytes: this.droppedBytes.labels(labels) };
      series.dropped.set(label, children);
    }
    children.packets.inc(packets);
    children.bytes.inc(bytes);
  }

  private countDns(series: SeriesChildren, rcode: number, responses: number): void {
    if (responses <= 0) return;
    let child = series.dnsResponses.get(rcode);
    if (!child) {
      child = this.dnsResponses.labels({ ...series.labels, rcode: rcodeNames[rcode] ?? String(rcode) });
      series.dnsResponses.set(rcode, child);
    }
    child.inc(responses);
  }

  async close(): Promise<void> {}
}
