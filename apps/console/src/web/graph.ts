// The service map's model, apart from drawing it: aggregates of the Observer become nodes (one
// per group, external endpoints grouped into one) and edges (initiator → responder, bytes/s per
// direction, coloured by drops, retransmits and RTT), placed by a deterministic layout.
export type Level = 'namespace' | 'workload' | 'pod' | 'process';
export const levels: readonly Level[] = ['namespace', 'workload', 'pod', 'process'];

export interface Group {
  namespace?: string;
  name?: string;
  external?: boolean;
}

/** One row of GetAggregatesResponse as protobuf JSON (uint64 as strings, zero fields present). */
export interface AggregateJson {
  src?: Group;
  dst?: Group;
  bytes?: string;
  reverseBytes?: string;
  packets?: string;
  reversePackets?: string;
  retransmits?: string;
  rttAvgUs?: number;
  rttMaxUs?: number;
  records?: string;
  droppedPackets?: string;
  droppedBytes?: string;
}

export interface MapNode {
  id: string;
  label: string;
  namespace: string;
  external: boolean;
  /** The filter that lists this node's flows (either end). */
  filter: string;
  x: number;
  y: number;
}

export interface MapEdge {
  id: string;
  source: string;
  target: string;
  bytes: number;
  reverseBytes: number;
  bytesPerSecond: number;
  reverseBytesPerSecond: number;
  packets: number;
  retransmits: number;
  rttAvgUs: number;
  rttMaxUs: number;
  records: number;
  /** ok, warn (some retransmits or RTT over 10 ms), bad (retransmits over 1 % of packets or RTT over 100 ms). */
  health: 'ok' | 'warn' | 'bad';
  /** Packets and bytes of the edge's conversations the kernel dropped (either vantage). */
  droppedPackets: number;
  droppedBytes: number;
  /** Dropped packets per packet carried (both directions), 0..1. */
  droppedShare: number;
  /** none, some (under 1 % of the packets), heavy (1 % or more). Drops colour an edge before health does. */
  drops: 'none' | 'some' | 'heavy';
  width: number;
  filter: string;
}

export interface NamespaceBox {
  id: string;
  label: string;
}

export interface ServiceMap {
  nodes: MapNode[];
  edges: MapEdge[];
  namespaces: NamespaceBox[];
}

const quote = (s: string) => JSON.stringify(s);

export function nodeId(group: Group | undefined, level: Level): string {
  if (!group || group.external) return 'external';
  return level === 'namespace' ? `ns:${group.namespace ?? ''}` : `${group.namespace ?? ''}/${group.name ?? ''}`;
}

/** The filter language condition of one end being in a group (side: src, dst). */
export function groupFilter(group: Group | undefined, level: Level, side: 'src' | 'dst'): string {
  if (!group || group.external) return `${side}.namespace == ""`;
  const ns = `${side}.namespace == ${quote(group.namespace ?? '')}`;
  const name = group.name ?? '';
  switch (level) {
    case 'namespace':
      return ns;
    case 'workload':
      return `${ns} and ${side}.workload == ${quote(name)}`;
    case 'pod':
      return `${ns} and ${side}.pod == ${quote(name)}`;
    case 'process': {
      const slash = name.lastIndexOf('/');
      return `${ns} and ${side}.pod == ${quote(name.slice(0, slash))} and ${side}.process == ${quote(name.slice(slash + 1))}`;
    }
  }
}

function label(group: Group | undefined, level: Level): string {
  if (!group || group.external) return 'external';
  return level === 'namespace' ? (group.namespace ?? '') : (group.name ?? '');
}

function health(retransmits: number, packets: number, rttAvgUs: number): MapEdge['health'] {
  if ((packets > 0 && retransmits / packets > 0.01) || rttAvgUs > 100_000) return 'bad';
  if (retransmits > 0 || rttAvgUs > 10_000) return 'warn';
  return 'ok';
}

/** A share of dropped packets from this on is heavy. */
export const HEAVY_DROP_SHARE = 0.01;

function drops(dropped: number, packets: number): { droppedShare: number; drops: MapEdge['drops'] } {
  if (dropped <= 0) return { droppedShare: 0, drops: 'none' };
  const share = Math.min(1, dropped / Math.max(1, packets));
  return { droppedShare: share, drops: share >= HEAVY_DROP_SHARE ? 'heavy' : 'some' };
}

const CELL_W = 200;
const CELL_H = 90;
const BOX_GAP = 80;

/**
 * Deterministic layout: namespaces sorted by name, each a box of its members in a square-ish grid
 * sorted by name; boxes flow left to right in rows; the external group comes last. The same data
 * always gives the same picture, and a new member moves nothing outside its own namespace's box
 * except the boxes after it in the same row.
 */
function place(nodes: MapNode[], level: Level): void {
  const byNs = new Map<string, MapNode[]>();
  for (const n of nodes) {
    const key = n.external ? '\uffff' : level === 'namespace' ? '' : n.namespace;
    byNs.set(key, [...(byNs.get(key) ?? []), n]);
  }
  const boxes = [...byNs.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const total = nodes.length;
  const rowWidth = Math.max(4, Math.ceil(Math.sqrt(total) * 1.6)) * CELL_W;
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  for (const [, members] of boxes) {
    members.sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    const cols = Math.max(1, Math.ceil(Math.sqrt(members.length)));
    const rows = Math.ceil(members.length / cols);
    const width = cols * CELL_W;
    if (x > 0 && x + width > rowWidth) {
      x = 0;
      y += rowHeight + BOX_GAP;
      rowHeight = 0;
    }
    members.forEach((n, i) => {
      n.x = x + (i % cols) * CELL_W + CELL_W / 2;
      n.y = y + Math.floor(i / cols) * CELL_H + CELL_H / 2;
    });
    x += width + BOX_GAP;
    rowHeight = Math.max(rowHeight, rows * CELL_H);
  }
}

export function buildMap(aggregates: readonly AggregateJson[], level: Level, rangeSeconds: number): ServiceMap {
  const nodes = new Map<string, MapNode>();
  const addNode = (group: Group | undefined): string => {
    const id = nodeId(group, level);
    if (!nodes.has(id)) {
      const external = !group || group.external === true;
      const filter = external ? 'src.namespace == "" or dst.namespace == ""' : `(${groupFilter(group, level, 'src')}) or (${groupFilter(group, level, 'dst')})`;
      nodes.set(id, { id, label: label(group, level), namespace: external ? '' : (group?.namespace ?? ''), external, filter, x: 0, y: 0 });
    }
    return id;
  };
  const seconds = Math.max(1, rangeSeconds);
  const edges: MapEdge[] = aggregates.map((a) => {
    const source = addNode(a.src);
    const target = addNode(a.dst);
    const bytes = Number(a.bytes ?? 0);
    const reverseBytes = Number(a.reverseBytes ?? 0);
    const packets = Number(a.packets ?? 0) + Number(a.reversePackets ?? 0);
    const retransmits = Number(a.retransmits ?? 0);
    const rttAvgUs = a.rttAvgUs ?? 0;
    const droppedPackets = Number(a.droppedPackets ?? 0);
    return {
      id: `${source}→${target}`,
      source,
      target,
      bytes,
      reverseBytes,
      bytesPerSecond: bytes / seconds,
      reverseBytesPerSecond: reverseBytes / seconds,
      packets,
      retransmits,
      rttAvgUs,
      rttMaxUs: a.rttMaxUs ?? 0,
      records: Number(a.records ?? 0),
      health: health(retransmits, packets, rttAvgUs),
      droppedPackets,
      droppedBytes: Number(a.droppedBytes ?? 0),
      ...drops(droppedPackets, packets),
      width: 1,
      filter: `${groupFilter(a.src, level, 'src')} and ${groupFilter(a.dst, level, 'dst')}`,
    };
  });
  // Width by bytes/s on a log scale, 1..12 px, relative to the busiest edge.
  const max = Math.max(1, ...edges.map((e) => e.bytesPerSecond + e.reverseBytesPerSecond));
  for (const e of edges) e.width = 1 + 11 * (Math.log1p(e.bytesPerSecond + e.reverseBytesPerSecond) / Math.log1p(max));
  // An edge losing packets stays visible however little it carries.
  for (const e of edges) if (e.drops !== 'none') e.width = Math.max(e.width, e.drops === 'heavy' ? 4 : 3);
  const list = [...nodes.values()];
  place(list, level);
  const namespaces = level === 'namespace' ? [] : [...new Set(list.filter((n) => !n.external).map((n) => n.namespace))].sort().map((ns) => ({ id: `box:${ns}`, label: ns }));
  return { nodes: list, edges, namespaces };
}

/** 1.2 kB/s: SI units, as people read rates. */
export function humanBytes(n: number, suffix = ''): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let x = n;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  return `${i === 0 && x >= 10 ? Math.round(x) : x.toFixed(1)} ${units[i]}${suffix}`;
}

export function humanRtt(us: number): string {
  if (us === 0) return '-';
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us} µs`;
}
