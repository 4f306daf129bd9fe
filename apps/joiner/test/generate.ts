// Made-up traffic of a small cluster for the join's differential and replay tests: pods on four
// nodes, Services in front of some, external hosts, loopback, one UDP socket talking to many
// responders, peers that never report, and malformed records; each record as its node's tagger
// emits it (own end known, remote end by IP only), delivered late and out of order in batches.
import { IpProtocol, ProcessSchema, Vantage, create, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';

type EndpointInit = NonNullable<NonNullable<Parameters<typeof newFlowRecord>[0]>['src']>;

export function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Knobs {
  conversations: number;
  intervals: number;
  intervalMs: number;
  /** Largest delay of a record behind its interval's end. */
  maxDelayMs: number;
  /** Share of records that are malformed or odd (no vantage, no dst, preset join fields). */
  oddShare: number;
  maxBatch: number;
}

export interface Batch {
  timeMs: number;
  records: FlowRecord[];
}

interface Pod {
  node: string;
  ip: string;
  name: string;
  namespace: string;
  pid: number;
  labels: Record<string, string>;
  /** Service selecting this pod on port 8080, if any. */
  service: Service | undefined;
  /** A node where kappa does not run: its records never come. */
  silent: boolean;
}

interface Service {
  name: string;
  namespace: string;
  ip: string;
  backends: Pod[];
}

const NODES = ['n0', 'n1', 'n2', 'n3'];

export function generate(seed: number, knobs: Knobs): Batch[] {
  const rnd = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rnd() * items.length)]!;
  const pods: Pod[] = Array.from({ length: 30 }, (_, i) => {
    const node = NODES[i % NODES.length]!;
    const namespace = i % 3 === 0 ? 'shop' : 'default';
    const labels: Record<string, string> = i % 4 === 0 ? {} : { app: `app-${i % 7}`, tier: i % 2 ? 'web' : 'db' };
    return { node, ip: `10.${NODES.indexOf(node)}.0.${i + 10}`, name: `pod-${i}`, namespace, pid: 100 + i, labels, service: undefined, silent: i % 11 === 10 };
  });
  const services: Service[] = Array.from({ length: 4 }, (_, s) => ({ name: `svc-${s}`, namespace: s % 2 ? 'shop' : 'default', ip: `10.96.0.${s + 1}`, backends: [] }));
  for (const [i, pod] of pods.entries()) {
    if (i % 3 === 1) {
      const svc = services[i % services.length]!;
      pod.service = svc;
      svc.backends.push(pod);
    }
  }

  // named: the pod's own tagger names the Service selecting it (not always: its informer may lag).
  const localEnd = (pod: Pod, port: number, named = true): EndpointInit => ({
    ip: pod.ip,
    port,
    process: { pid: pod.pid, name: `p${pod.pid}`, cmdline: `/bin/${pod.name}`, containerId: `c-${pod.name}` },
    // Some clients resolved their peer by name (the joiner carries it to the peer's record).
    ...(pod.pid % 3 === 0 ? { peerDnsName: `peer-of-${pod.name}.test` } : {}),
    kube: {
      node: pod.node,
      objectName: pod.name,
      objectNamespace: pod.namespace,
      objectType: 'pod',
      workloadName: pod.name.replace(/-\d+$/, ''),
      labels: pod.labels,
      containerName: 'main',
      ...(named && pod.service && port === 8080 ? { serviceName: pod.service.name, serviceNamespace: pod.service.namespace } : {}),
    },
  });
  const remoteOfPod = (pod: Pod, port: number): EndpointInit => {
    // The tagger sometimes does not know the IP (a pod just created): no kube at all.
    if (rnd() < 0.05) return { ip: pod.ip, port };
    return {
      ip: pod.ip,
      port,
      kube: {
        objectName: pod.name,
        objectNamespace: pod.namespace,
        objectType: 'pod',
        node: pod.node,
        labels: pod.labels,
        ...(pod.service && port === 8080 ? { serviceName: pod.service.name, serviceNamespace: pod.service.namespace } : {}),
      },
    };
  };

  interface Planned {
    arrival: number;
    record: FlowRecord;
  }
  const planned: Planned[] = [];
  let serial = 0;
  const emit = (conversation: number, interval: number, init: Parameters<typeof newFlowRecord>[0]) => {
    const start = 1_700_000_000_000_000_000n + BigInt(interval * knobs.intervalMs) * 1_000_000n;
    const record = newFlowRecord({
      startNs: start,
      endNs: start + BigInt(knobs.intervalMs) * 1_000_000n,
      bytes: BigInt(Math.floor(rnd() * 100_000)),
      packets: BigInt(Math.floor(rnd() * 100)),
      observation: 'socket',
      id: `r${serial++}-c${conversation}-i${interval}`,
      ...init,
    });
    if (rnd() < knobs.oddShare) oddify(record, rnd);
    const arrival = (interval + 1) * knobs.intervalMs + Math.floor(rnd() * knobs.maxDelayMs);
    planned.push({ arrival, record });
  };

  for (let c = 0; c < knobs.conversations; c++) {
    const kind = rnd();
    const protocol = rnd() < 0.7 ? IpProtocol.TCP : IpProtocol.UDP;
    const first = Math.floor(rnd() * knobs.intervals);
    const last = Math.min(knobs.intervals - 1, first + Math.floor(rnd() * 4));
    const port = 30000 + Math.floor(rnd() * 30000);
    const client = pick(pods);
    if (kind < 0.35) {
      // pod → pod, directly (to a Service-selected pod on 8080 half the time)
      const server = pick(pods.filter((p) => p !== client));
      const serverPort = rnd() < 0.5 ? 8080 : 5432;
      for (let i = first; i <= last; i++) {
        if (!client.silent) emit(c, i, { node: client.node, vantage: Vantage.SRC, protocol, src: localEnd(client, port), dst: remoteOfPod(server, serverPort) });
        if (!server.silent) emit(c, i, { node: server.node, vantage: Vantage.DST, protocol, src: remoteOfPod(client, port), dst: localEnd(server, serverPort, rnd() < 0.7) });
      }
    } else if (kind < 0.55) {
      // pod → Service ClusterIP, DNAT'd to one backend
      const svc = pick(services.filter((s) => s.backends.length > 0));
      const backend = pick(svc.backends);
      const svcEnd = (): EndpointInit => ({ ip: svc.ip, port: 80, kube: { objectType: 'service', objectName: svc.name, objectNamespace: svc.namespace, serviceName: svc.name, serviceNamespace: svc.namespace } });
      for (let i = first; i <= last; i++) {
        if (!client.silent) emit(c, i, { node: client.node, vantage: Vantage.SRC, protocol, src: localEnd(client, port), dst: svcEnd() });
        if (!backend.silent) emit(c, i, { node: backend.node, vantage: Vantage.DST, protocol, src: remoteOfPod(client, port), dst: localEnd(backend, 8080) });
      }
    } else if (kind < 0.65) {
      // pod → external, and external → pod
      const external = `203.0.113.${Math.floor(rnd() * 200)}`;
      const outbound = rnd() < 0.5;
      for (let i = first; i <= last; i++) {
        if (outbound && !client.silent) emit(c, i, { node: client.node, vantage: Vantage.SRC, protocol, src: localEnd(client, port), dst: { ip: external, port: 443, kube: { objectType: 'external' } } });
        if (!outbound && !client.silent) emit(c, i, { node: client.node, vantage: Vantage.DST, protocol, src: { ip: external, port, kube: { objectType: 'external' } }, dst: localEnd(client, 443) });
      }
    } else if (kind < 0.75) {
      // loopback on one node: the same 127.0.0.1 pair exists on every node
      const node = pick(NODES);
      const lo = (p: number, mine: boolean): EndpointInit => ({ ip: '127.0.0.1', port: p, ...(mine ? { process: { pid: p, name: `lo${p}` }, kube: { node, objectType: 'node', objectName: node } } : { kube: { objectType: 'node', objectName: node } }) });
      const loPort = 40000 + (c % 50);
      for (let i = first; i <= last; i++) {
        emit(c, i, { node, vantage: Vantage.SRC, protocol, src: lo(loPort, true), dst: lo(80, false) });
        emit(c, i, { node, vantage: Vantage.DST, protocol, src: lo(loPort, false), dst: lo(80, true) });
      }
    } else if (kind < 0.85) {
      // one UDP socket asking many responders (a resolver, a scatter-gather client)
      const fan = 2 + Math.floor(rnd() * 12);
      const socketPort = 50000 + (c % 200);
      for (let j = 0; j < fan; j++) {
        const server = pods[(c + j * 7) % pods.length]!;
        if (server === client) continue;
        const i = first;
        if (!client.silent) emit(c, i, { node: client.node, vantage: Vantage.SRC, protocol: IpProtocol.UDP, src: localEnd(client, socketPort), dst: remoteOfPod(server, 53) });
        if (!server.silent) emit(c, i, { node: server.node, vantage: Vantage.DST, protocol: IpProtocol.UDP, src: remoteOfPod(client, socketPort), dst: localEnd(server, 53) });
      }
    } else {
      // the same client socket again in later intervals: cached ends join at once
      const server = pick(pods.filter((p) => p !== client));
      const reused = 33000 + (c % 17);
      for (let i = first; i < knobs.intervals; i += 1 + Math.floor(rnd() * 3)) {
        if (!client.silent) emit(c, i, { node: client.node, vantage: Vantage.SRC, protocol, src: localEnd(client, reused), dst: remoteOfPod(server, 9000) });
        if (!server.silent && rnd() < 0.8) emit(c, i, { node: server.node, vantage: Vantage.DST, protocol, src: remoteOfPod(client, reused), dst: localEnd(server, 9000) });
      }
    }
  }

  planned.sort((a, b) => a.arrival - b.arrival);
  const batches: Batch[] = [];
  let i = 0;
  let time = 0;
  while (i < planned.length) {
    const size = 1 + Math.floor(rnd() * knobs.maxBatch);
    const records = planned.slice(i, i + size);
    i += size;
    time = Math.max(time, records.at(-1)!.arrival);
    batches.push({ timeMs: time, records: records.map((p) => p.record) });
    // Idle stretches: a clock tick (an empty batch) now and then.
    if (rnd() < 0.05) {
      time += Math.floor(rnd() * 3 * knobs.intervalMs);
      batches.push({ timeMs: time, records: [] });
    }
  }
  // The end: time enough for every wait to run out.
  batches.push({ timeMs: time + 100 * knobs.intervalMs + 10 * knobs.maxDelayMs, records: [] });
  return batches;
}

/** Records a real pipeline rarely sends but the joiner must pass through correctly. */
function oddify(record: FlowRecord, rnd: () => number): void {
  const r = rnd();
  if (r < 0.2) record.vantage = Vantage.UNSPECIFIED;
  else if (r < 0.35) record.dst = undefined;
  else if (r < 0.5) record.joined = true;
  else if (r < 0.65) record.joinStatus = 'stale';
  else if (r < 0.8) {
    const remote = record.vantage === Vantage.SRC ? record.dst : record.src;
    if (remote) {
      remote.backendIp = '10.9.9.9';
      remote.backendPort = 99;
    }
  } else if (r < 0.9) {
    const remote = record.vantage === Vantage.SRC ? record.dst : record.src;
    if (remote) remote.process = create(ProcessSchema, { pid: 1, name: 'guessed' });
  } else {
    const local = record.vantage === Vantage.SRC ? record.src : record.dst;
    if (local?.kube) local.kube.serviceNamespace = 'ns-without-name';
  }
}
