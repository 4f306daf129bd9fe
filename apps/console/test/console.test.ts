// The console in a real browser: Debian's Chromium driven by playwright-core (executablePath, no
// browser download) against the real stack — nats-server, the exporter with its flow store and a
// TLS + token Observer, the console over HTTPS with the same token — fed known traffic between
// pods of two namespaces. Every expectation is computed from the published records, the oracle.
// Screenshots (1280×800) go to .test-results/console/ (git-ignored).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, stageStatus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort } from '@kappa/testing';
import { MINUTE, SECOND, generatedMap, repoRoot, startConsoleStack, waitUntil as until } from './stack.js';
import type { ConsoleStack } from './stack.js';

const artefacts = join(repoRoot, '.test-results/console');
const now = BigInt(Date.now()) * 1_000_000n;

let stack: ConsoleStack;
let bus: Bus;
let consoleUrl: string;
let TOKEN: string;

// --- known traffic: pods in namespaces shop and payments, and one external endpoint ---
interface Pod {
  ns: string;
  workload: string;
  pod: string;
  ip: string;
}
const pods: Record<string, Pod> = {
  frontend: { ns: 'shop', workload: 'frontend', pod: 'frontend-7d9f-a', ip: '10.20.0.10' },
  cart: { ns: 'shop', workload: 'cart', pod: 'cart-5c4b-a', ip: '10.20.0.11' },
  api: { ns: 'payments', workload: 'api', pod: 'api-6f8d-a', ip: '10.20.1.10' },
  db: { ns: 'payments', workload: 'db', pod: 'db-0', ip: '10.20.1.11' },
};
const end = (p: Pod, port: number, process: string) => ({
  ip: p.ip,
  port,
  process: { name: process },
  kube: { objectName: p.pod, objectNamespace: p.ns, objectType: 'pod', workloadName: p.workload, workloadKind: 'Deployment' },
});

const published: FlowRecord[] = [];
let seq = 0;
type RecordInit = Parameters<typeof newFlowRecord>[0];
/** One conversation interval as the joiner emits it: the initiator's and the responder's record. */
function conversation(from: Pod, to: Pod, port: number, bytes: number, back: number, ageMinutes: number, retransmits = 0, more: (vantage: Vantage) => Partial<RecordInit> = () => ({})): FlowRecord[] {
  const endNs = now - BigInt(ageMinutes) * MINUTE;
  return [Vantage.SRC, Vantage.DST].map((vantage) =>
    newFlowRecord(<RecordInit>{
      id: `c${seq++}`,
      node: vantage === Vantage.SRC ? 'node-a' : 'node-b',
      vantage,
      protocol: IpProtocol.TCP,
      startNs: endNs - 10n * SECOND,
      endNs,
      src: end(from, 40000 + seq, from.workload),
      dst: end(to, port, to.workload),
      bytes: BigInt(bytes),
      packets: BigInt(Math.ceil(bytes / 1000)),
      reverseBytes: BigInt(back),
      reversePackets: BigInt(Math.ceil(back / 1000)),
      tcp: { srttUs: 300 + seq, retransmits },
      joined: true,
      ...more(vantage),
    }),
  );
}
function externalCall(from: Pod, bytes: number, ageMinutes: number): FlowRecord {
  const endNs = now - BigInt(ageMinutes) * MINUTE;
  return newFlowRecord({
    id: `x${seq++}`,
    node: 'node-a',
    vantage: Vantage.SRC,
    protocol: IpProtocol.TCP,
    startNs: endNs - 10n * SECOND,
    endNs,
    src: end(from, 41000 + seq, from.workload),
    dst: { ip: '203.0.113.7', port: 443, kube: { objectType: 'external' } },
    bytes: BigInt(bytes),
    packets: 3n,
    reverseBytes: 5000n,
    reversePackets: 5n,
    tcp: { srttUs: 40_000 },
    joined: false,
    joinStatus: 'external',
  });
}

const known: FlowRecord[] = [
  // 50 minutes ago: the old part of the hour.
  ...conversation(pods.frontend!, pods.cart!, 8080, 12_000, 48_000, 50),
  ...conversation(pods.cart!, pods.api!, 8443, 3_000, 1_000, 50),
  ...conversation(pods.api!, pods.db!, 5432, 900, 25_000, 50),
  // 5 to 10 minutes ago.
  ...conversation(pods.frontend!, pods.cart!, 8080, 20_000, 70_000, 8),
  ...conversation(pods.cart!, pods.api!, 8443, 4_500, 2_000, 6, 3),
  ...conversation(pods.frontend!, pods.cart!, 8080, 1_000, 4_000, 5),
  externalCall(pods.api!, 1_200, 7),
  // Drops (#21): the responder's kernel dropped 2 of the 3 packets of cart → db (on the
  // responder's record only, as capture attributes them), and 1 of the 200 packets of
  // frontend → api at the initiator; frontend asked DNS for api's name.
  ...conversation(pods.cart!, pods.db!, 5432, 2_000, 1_000, 6, 0, (v) => (v === Vantage.DST ? { drops: { packets: 2n, bytes: 120n, reason: 'NETFILTER_DROP', reasonPackets: 2n } } : {})),
  ...conversation(pods.frontend!, pods.api!, 9090, 150_000, 50_000, 9, 0, (v) => ({
    src: { ...end(pods.frontend!, 42000, 'frontend'), peerDnsName: 'api.payments.svc.cluster.local' },
    ...(v === Vantage.SRC ? { drops: { packets: 1n, bytes: 1500n, reason: 'NO_SOCKET', reasonPackets: 1n } } : {}),
  })),
  // A DNS exchange of api with the resolver outside the cluster: NXDOMAIN in 1.5 ms.
  newFlowRecord({
    id: `d${seq++}`,
    node: 'node-a',
    vantage: Vantage.SRC,
    protocol: IpProtocol.UDP,
    startNs: now - 4n * MINUTE - SECOND,
    endNs: now - 4n * MINUTE,
    src: end(pods.api!, 53001, 'api'),
    dst: { ip: '192.0.2.53', port: 53, kube: { objectType: 'external' } },
    bytes: 80n,
    packets: 1n,
    reverseBytes: 160n,
    reversePackets: 1n,
    joined: false,
    joinStatus: 'external',
    dns: { queryName: 'db.example.com', queryType: 1, rcode: 3, queries: 1n, responses: 1n, latencyCount: 1n, latencySumUs: 1500n, latencyMaxUs: 1500n, nxdomain: 1n },
  }),
];

/** The map's truth: per workload edge, the records counted once (initiator side, or unjoined). */
function expectedEdges(records: FlowRecord[]): Map<string, { bytes: bigint; reverseBytes: bigint; ids: string[] }> {
  const edges = new Map<string, { bytes: bigint; reverseBytes: bigint; ids: string[] }>();
  const label = (e: FlowRecord['src']) => (e?.kube?.objectNamespace ? `${e.kube.objectNamespace}/${e.kube.workloadName}` : 'external');
  for (const r of records) {
    const key = `${label(r.src)} → ${label(r.dst)}`;
    const edge = edges.get(key) ?? { bytes: 0n, reverseBytes: 0n, ids: [] };
    edge.ids.push(r.id);
    if (r.vantage === Vantage.SRC || !r.joined) {
      edge.bytes += r.bytes;
      edge.reverseBytes += r.reverseBytes;
    }
    edges.set(key, edge);
  }
  return edges;
}

interface ShownEdge {
  source: string;
  target: string;
  bytes: string;
  reverseBytes: string;
}

async function shownMap(page: Page): Promise<{ nodes: string[]; edges: ShownEdge[] }> {
  await page.waitForSelector('[data-testid=map][data-rendered]');
  const nodes = await page.evaluate(() => window.kappaMap!.map.nodes.map((n) => (n.external ? 'external' : `${n.namespace}/${n.label}`)).sort());
  const edges = await page.$$eval('[data-testid=edge-row]', (rows) =>
    rows.map((r) => ({ source: r.getAttribute('data-source')!, target: r.getAttribute('data-target')!, bytes: r.getAttribute('data-bytes')!, reverseBytes: r.getAttribute('data-reverse-bytes')! })),
  );
  return { nodes, edges: edges.sort((a, b) => `${a.source}${a.target}`.localeCompare(`${b.source}${b.target}`)) };
}

function asShown(edges: Map<string, { bytes: bigint; reverseBytes: bigint }>): { nodes: string[]; edges: ShownEdge[] } {
  const list = [...edges.entries()].map(([key, e]) => {
    const [source, target] = key.split(' → ') as [string, string];
    return { source, target, bytes: String(e.bytes), reverseBytes: String(e.reverseBytes) };
  });
  const nodes = [...new Set(list.flatMap((e) => [e.source, e.target]))].sort();
  return { nodes, edges: list.sort((a, b) => `${a.source}${a.target}`.localeCompare(`${b.source}${b.target}`)) };
}

async function newPage(query = ''): Promise<Page> {
  const context = await stack.newContext();
  const page = await context.newPage();
  page.on('pageerror', (error) => process.stderr.write(`page error: ${error.message}\n`));
  page.on('console', (message) => process.stderr.write(`page console: ${message.text()}\n`));
  await page.goto(`${consoleUrl}${query}#token=${TOKEN}`);
  return page;
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(artefacts, `${name}.png`) });

beforeAll(async () => {
  mkdirSync(artefacts, { recursive: true });
  stack = await startConsoleStack();
  ({ bus, url: consoleUrl, token: TOKEN } = stack);
  await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: 'known-1', producer: 'test', records: known }));
  published.push(...known);
  // The store has the records once the API's flow list has them all.
  await until(
    async () => (await stack.api<{ flows: unknown[] }>('api/flows?since=2h').catch(() => ({ flows: [] }))).flows.length === known.length,
    30_000,
    'the store holds the known records',
  ).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${stack.logs()}`);
  });
}, 240_000);

afterAll(async () => {
  await stack?.stop();
});

describe('the console in Chromium', () => {
  it('the service map shows exactly the expected workloads and edges, each edge with the bytes of its records', async () => {
    const page = await newPage();
    const shown = await shownMap(page);
    expect(shown).toEqual(asShown(expectedEdges(known)));
    // The canvas has what the list says: one drawn node per workload, one drawn edge per pair.
    const drawn = await page.evaluate(() => ({ nodes: window.kappaMap!.cy.nodes(':childless').length, edges: window.kappaMap!.cy.edges().length }));
    expect(drawn).toEqual({ nodes: shown.nodes.length, edges: shown.edges.length });
    await shot(page, 'service-map');
    await page.context().close();
  });

  it('clicking an edge on the canvas lists exactly its flows', async () => {
    const page = await newPage();
    await page.waitForSelector('[data-testid=map][data-rendered]');
    const point = await page.evaluate(() => {
      const cy = window.kappaMap!.cy;
      const edge = cy.$id('payments/api→payments/db');
      const box = cy.container()!.getBoundingClientRect();
      const mid = edge.renderedMidpoint();
      return { x: box.left + mid.x, y: box.top + mid.y };
    });
    await page.mouse.click(point.x, point.y);
    await page.waitForSelector('[data-testid=flow-panel] [data-testid=flow-row]');
    expect(await page.textContent('[data-testid=panel-title]')).toBe('payments/api → payments/db: its flows');
    const ids = await page.$$eval('[data-testid=flow-panel] [data-testid=flow-row]', (rows) => rows.map((r) => r.getAttribute('data-id')!).sort());
    expect(ids).toEqual(expectedEdges(known).get('payments/api → payments/db')!.ids.sort());
    await shot(page, 'edge-flows');
    await page.context().close();
  });

  it('a filter and a time range narrow the map; a bad filter shows where it is wrong', async () => {
    const page = await newPage();
    await page.waitForSelector('[data-testid=map][data-rendered]');
    await page.fill('[data-testid=filter]', 'src.namespace == "payments"');
    await page.click('[data-testid=apply]');
    await page.waitForFunction(() => window.kappaMap?.map.edges.length === 2);
    expect(await shownMap(page)).toEqual(asShown(expectedEdges(known.filter((r) => r.src?.kube?.objectNamespace === 'payments'))));
    await shot(page, 'map-filtered');

    const since = new Date(Number((now - 20n * MINUTE) / 1_000_000n)).toISOString();
    await page.fill('[data-testid=filter]', '');
    await page.fill('[data-testid=since]', since);
    await page.click('[data-testid=apply]');
    const recent = known.filter((r) => r.endNs >= now - 20n * MINUTE);
    await page.waitForFunction((n) => window.kappaMap?.map.edges.length === n, expectedEdges(recent).size);
    expect(await shownMap(page)).toEqual(asShown(expectedEdges(recent)));
    await shot(page, 'map-last-20-minutes');

    await page.fill('[data-testid=filter]', 'src.namespace == shop and dst.port = 443');
    await page.click('[data-testid=apply]');
    await page.waitForSelector('[data-testid=filter-error]');
    expect(await page.textContent('[data-testid=filter-error]')).toContain('"=" is not an operator: compare with == at position 36');
    await page.context().close();
  });

  it('top talkers, the flow table with its live tail, and the health page', async () => {
    const page = await newPage('?page=top');
    await page.waitForSelector('[data-testid=top-row]');
    const first = await page.$$eval('[data-testid=top-row] td', (tds) => tds.slice(0, 2).map((t) => t.textContent));
    // The largest pair by bytes in both directions.
    const largest = [...expectedEdges(known).entries()].sort((a, b) => Number(b[1].bytes + b[1].reverseBytes - (a[1].bytes + a[1].reverseBytes)))[0]![0];
    expect(first.join(' → ')).toBe(largest);
    await shot(page, 'top-talkers');

    await page.click('[data-testid=nav-flows]');
    await page.waitForSelector('[data-testid=flow-row]');
    expect(await page.$$eval('[data-testid=flow-row]', (rows) => rows.length)).toBe(known.length);
    await page.check('[data-testid=live]');
    await page.waitForSelector('text=waiting for new flows');
    const live = conversation(pods.api!, pods.db!, 5432, 777, 888, 0);
    await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: 'live-1', producer: 'test', records: live }));
    published.push(...live);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=flow-row]').length === 2);
    expect((await page.$$eval('[data-testid=flow-row]', (rows) => rows.map((r) => r.getAttribute('data-id')!))).sort()).toEqual(live.map((r) => r.id).sort());
    await shot(page, 'live-tail');

    await page.click('[data-testid=nav-health]');
    await page.waitForSelector('[data-testid=health-row][data-stage=exporter]');
    expect(await page.textContent('[data-testid=health-row][data-stage=exporter]')).toContain('console-test-exporter');
    expect(await page.textContent('[data-testid=health-summary]')).toContain('missing (no heartbeat): capture, process-enricher, k8s-tagger, joiner');
    expect(await page.textContent('[data-testid=store-summary]')).toMatch(/flow store: \d+ records/);
    await shot(page, 'health');
    await page.context().close();
  });

  it('refuses the API without the token and asks for it', async () => {
    expect((await fetch(`${consoleUrl}api/map`)).status).toBe(401);
    expect((await fetch(`${consoleUrl}api/map`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const context = await stack.newContext();
    const page = await context.newPage();
    await page.goto(consoleUrl);
    await page.waitForSelector('form.token');
    await context.close();
  });

  it('drops: dropping edges drawn in the legend\'s drop colours and dashed, their dropped packets listed; the flow table shows DROPPED and the DNS name; the verdict narrows map and flows', async () => {
    // The truth, from the published records (the known ones and the live tail's): dropped packets per workload edge, over both
    // vantages (each drop is on the record of the vantage that dropped it), and the share of the
    // edge's packets (counted once).
    const label = (e: FlowRecord['src']) => (e?.kube?.objectNamespace ? `${e.kube.objectNamespace}/${e.kube.workloadName}` : 'external');
    const truth = new Map<string, { dropped: bigint; packets: bigint }>();
    for (const r of published) {
      const key = `${label(r.src)}→${label(r.dst)}`;
      const t = truth.get(key) ?? { dropped: 0n, packets: 0n };
      t.dropped += r.drops?.packets ?? 0n;
      if (r.vantage === Vantage.SRC || !r.joined) t.packets += r.packets + r.reversePackets;
      truth.set(key, t);
    }
    const dropping = [...truth.entries()].filter(([, t]) => t.dropped > 0n).map(([k]) => k).sort();
    expect(dropping).toEqual(['shop/cart→payments/db', 'shop/frontend→payments/api']);
    // The legend's promise: heavy from 1 % of the edge's packets.
    const heavy = (t: { dropped: bigint; packets: bigint }) => Number(t.dropped) / Number(t.packets) >= 0.01;

    const page = await newPage();
    await page.waitForSelector('[data-testid=map][data-rendered]');
    // The edge list: every edge's dropped packets.
    const listed = await page.$$eval('[data-testid=edge-row]', (rows) => rows.map((r) => [`${r.getAttribute('data-source')}→${r.getAttribute('data-target')}`, r.getAttribute('data-dropped-packets')] as [string, string]));
    expect(new Map(listed)).toEqual(new Map([...truth.entries()].map(([k, t]) => [k, String(t.dropped)])));
    // The canvas: each edge's drawn colour and line style, and the legend's colours as the page shows them.
    const drawn = await page.evaluate(() => {
      const rgb = (css: string) => {
        const probe = document.createElement('span');
        probe.style.color = css;
        document.body.append(probe);
        const c = getComputedStyle(probe).color;
        probe.remove();
        return c;
      };
      const legend = (id: string) => getComputedStyle(document.querySelector(`[data-testid=${id}]`)!).color;
      return {
        some: legend('legend-drops-some'),
        heavy: legend('legend-drops-heavy'),
        legendText: document.querySelector('[data-testid=legend]')!.textContent,
        edges: window.kappaMap!.cy.edges().map((e) => [e.id(), rgb(e.style('line-color') as string), e.style('line-style') as string] as [string, string, string]),
      };
    });
    expect(drawn.legendText).toContain('dashed: packets dropped ≥ 1 % of packets dropped');
    expect(drawn.some).not.toBe(drawn.heavy);
    for (const [id, colour, style] of drawn.edges) {
      const t = truth.get(id)!;
      if (t.dropped === 0n) {
        expect([id, style]).toEqual([id, 'solid']);
        expect([drawn.some, drawn.heavy]).not.toContain(colour);
      } else {
        expect([id, colour, style]).toEqual([id, heavy(t) ? drawn.heavy : drawn.some, 'dashed']);
      }
    }
    expect(drawn.edges.map(([id]) => id).sort()).toEqual([...truth.keys()].sort());
    await shot(page, 'map-drops');

    // Clicking the heavily dropping edge: its flows, the responder's record DROPPED with the reason.
    const point = await page.evaluate(() => {
      const cy = window.kappaMap!.cy;
      const box = cy.container()!.getBoundingClientRect();
      // A third of the way along (its midpoint is where frontend → api crosses it).
      const edge = cy.$id('shop/cart→payments/db');
      const [a, b] = [edge.renderedSourceEndpoint(), edge.renderedTargetEndpoint()];
      return { x: box.left + a.x + (b.x - a.x) / 3, y: box.top + a.y + (b.y - a.y) / 3 };
    });
    await page.mouse.click(point.x, point.y);
    await page.waitForSelector('[data-testid=flow-panel] [data-testid=flow-row]');
    const verdicts = await page.$$eval('[data-testid=flow-panel] [data-testid=flow-row]', (rows) => rows.map((r) => [r.getAttribute('data-id')!, r.querySelector('[data-testid=flow-verdict]')!.textContent!] as [string, string]));
    const cartDb = published.filter((r) => label(r.src) === 'shop/cart' && label(r.dst) === 'payments/db');
    expect(new Map(verdicts)).toEqual(new Map(cartDb.map((r) => [r.id, r.drops ? `DROPPED ${r.drops.packets} ${r.drops.reason}` : 'forwarded'])));
    await shot(page, 'edge-drops-flows');

    // The flow table: the DNS name the initiator asked for, at the destination; the DNS exchange.
    await page.click('[data-testid=nav-flows]');
    await page.waitForSelector('[data-testid=flow-row]');
    const rows = await page.$$eval('[data-testid=flow-row]', (trs) =>
      trs.map((r) => ({ id: r.getAttribute('data-id')!, dst: r.querySelector('[data-testid=flow-dst]')!.textContent!, dns: r.querySelector('[data-testid=flow-dns]')!.textContent! })),
    );
    for (const r of published) {
      const row = rows.find((x) => x.id === r.id)!;
      if (r.src?.peerDnsName) expect(row.dst).toBe(`${r.dst!.kube!.objectNamespace}/${r.dst!.kube!.objectName}[${r.dst!.process!.name}] ${r.src.peerDnsName} ${r.dst!.ip}:${r.dst!.port}`);
      else expect(row.dst).not.toContain('.svc.');
      expect(row.dns).toBe(r.dns ? `${r.dns.queryName} A NXDOMAIN 1.50 ms` : '');
    }
    expect(rows.filter((r) => r.dst.includes('api.payments.svc.cluster.local'))).toHaveLength(2);

    // The verdict in the filter bar (kappa observe --verdict dropped): only flows with drops.
    await page.selectOption('[data-testid=verdict]', 'dropped');
    await page.click('[data-testid=apply]');
    const droppedIds = published.filter((r) => (r.drops?.packets ?? 0n) > 0n).map((r) => r.id).sort();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=flow-row]').length === n, droppedIds.length);
    expect(await page.$$eval('[data-testid=flow-row]', (trs) => trs.map((r) => r.getAttribute('data-id')!).sort())).toEqual(droppedIds);
    expect(await page.$$eval('[data-testid=flow-row]', (trs) => trs.map((r) => r.getAttribute('data-verdict')))).toEqual(droppedIds.map(() => 'dropped'));
    await shot(page, 'flows-dropped');
    // ... and the map with it: exactly the edges of those flows (bytes of the initiator's records only).
    await page.click('[data-testid=nav-map]');
    await page.waitForFunction((n) => window.kappaMap?.map.edges.length === n, dropping.length);
    expect(await shownMap(page)).toEqual(asShown(expectedEdges(published.filter((r) => (r.drops?.packets ?? 0n) > 0n))));
    await page.selectOption('[data-testid=verdict]', 'forwarded');
    await page.click('[data-testid=apply]');
    // (A responder's record makes no edge of its own unless it has drops: its initiator's record
    // counts the conversation, and here the verdict filtered that one out.)
    const forwarded = published.filter((r) => !r.drops && (r.vantage === Vantage.SRC || !r.joined));
    await page.waitForFunction((n) => window.kappaMap?.map.edges.length === n, expectedEdges(forwarded).size);
    expect(await shownMap(page)).toEqual(asShown(expectedEdges(forwarded)));
    await page.context().close();
  });

  it('a generated map of 500 workloads and 5 000 edges draws every workload and edge on screen, and a click on a workload lists exactly its flows', async () => {
    // In a window of its own, three hours back, so it does not mix with the known traffic. How
    // fast it first renders is a benchmark (npm run bench:console, BENCHMARKS.md), not asserted.
    const at = now - 180n * MINUTE;
    const { records, pairs } = generatedMap(at, 500, 5000);
    for (let b = 0; b < records.length; b += 1000) await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: `gen-${b}`, producer: 'test', records: records.slice(b, b + 1000) }));
    const since = String(at - MINUTE);
    const untilNs = String(at + MINUTE);
    await until(async () => (await stack.api<{ aggregates?: unknown[] }>(`api/map?since=${since}&until=${untilNs}`)).aggregates?.length === 5000, 60_000, 'generated records stored');
    // The truth, from the published records: one node per workload, one edge per pair with its bytes.
    const id = (w: { ns: string; workload: string }) => `${w.ns}/${w.workload}`;
    const expectedNodes = [...new Set(pairs.flatMap(([from, to]) => [id(from), id(to)]))].sort();
    const expectedEdges = pairs.map(([from, to], i) => `${id(from)}→${id(to)} ${String(records[i]!.bytes)}`).sort();
    expect(expectedNodes).toHaveLength(500);
    expect(new Set(expectedEdges).size).toBe(5000);

    const context = await stack.newContext();
    const page = await context.newPage();
    await page.goto(`${consoleUrl}?since=${since}&until=${untilNs}#token=${TOKEN}`);
    await page.waitForSelector('[data-testid=map][data-rendered]', { timeout: 120_000 });
    // What is on the canvas: every workload and every edge, visible, inside the drawn area.
    const drawn = await page.evaluate(() => {
      const cy = window.kappaMap!.cy;
      const { width, height } = cy.container()!.getBoundingClientRect();
      const workloads = cy.nodes().not('.nslabel').not('.box');
      const offScreen = workloads.filter((n) => {
        const p = (n as cytoscape.NodeSingular).renderedPosition();
        return p.x < 0 || p.y < 0 || p.x > width || p.y > height;
      });
      return {
        nodes: workloads.filter((n) => n.visible()).map((n) => n.id()).sort(),
        offScreen: offScreen.map((n) => n.id()),
        edges: cy.edges().filter((e) => e.visible()).map((e: cytoscape.EdgeSingular) => `${e.source().id()}→${e.target().id()} ${String(window.kappaMap!.map.edges.find((m) => m.id === e.id())?.bytes)}`).sort(),
        summary: document.querySelector('[data-testid=map-summary]')?.textContent?.trim(),
      };
    });
    expect(drawn.nodes).toEqual(expectedNodes);
    expect(drawn.offScreen).toEqual([]);
    expect(drawn.edges).toEqual(expectedEdges);
    expect(drawn.summary).toBe('500 nodes, 5000 edges');
    await shot(page, 'map-500-workloads');
    // Still interactive: a click where gen-0/w-0 is drawn opens its flows, those of each pair it is in.
    const point = await page.evaluate(() => {
      const cy = window.kappaMap!.cy;
      const box = cy.container()!.getBoundingClientRect();
      const p = cy.$id('gen-0/w-0').renderedPosition();
      return { x: box.left + p.x, y: box.top + p.y };
    });
    await page.mouse.click(point.x, point.y);
    await page.waitForSelector('[data-testid=flow-panel] [data-testid=flow-row]', { timeout: 60_000 });
    expect(await page.textContent('[data-testid=panel-title]')).toBe('w-0: its flows');
    const expectedIds = records.filter((_, i) => pairs[i]!.some((w) => id(w) === 'gen-0/w-0')).map((r) => r.id).sort();
    expect(expectedIds).toHaveLength(20);
    const ids = await page.$$eval('[data-testid=flow-panel] [data-testid=flow-row]', (rows) => rows.map((r) => r.getAttribute('data-id')!).sort());
    expect(ids).toEqual(expectedIds);
    await context.close();
  }, 300_000);

  it('when an exporter replica does not answer, the page says whose flows are missing, and stops saying it once every replica answers', async () => {
    // A replica that heartbeats with an Observer nobody listens on: the exporter's relay asks it,
    // cannot reach it, and answers with its own flows and the replica's name.
    const ghost = await connectBus({ servers: [stack.natsUrl], name: 'ghost-exporter', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
    const closedPort = await freePort();
    ghost.startHeartbeat(() => stageStatus({ stage: 'exporter', instance: 'ghost-exporter', node: 'ghost', startedNs: 1n, ready: true, features: { observer: `127.0.0.1:${closedPort}` } }), 1000);
    try {
      await until(async () => (await stack.api<{ missing?: string }>('api/map?since=2h')).missing?.startsWith(`ghost-exporter (127.0.0.1:${closedPort}): `) ?? false, 30_000, 'the relay names the replica');
      const flows = await stack.api<{ flows: unknown[]; missing?: string }>('api/flows?since=2h');
      expect(flows.missing).toMatch(/^ghost-exporter /);
      expect(flows.flows.length).toBeGreaterThanOrEqual(known.length);
      // The live tail: its subscription line, then the replica it could not follow.
      const controller = new AbortController();
      const tail = await fetch(`${consoleUrl}api/tail`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal });
      const reader = tail.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      const deadline = setTimeout(() => controller.abort(), 10_000);
      while (text.split('\n').length < 3) {
        const chunk = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (chunk.done) break;
        text += chunk.value ?? '';
      }
      clearTimeout(deadline);
      controller.abort();
      const [subscribedLine, missingLine] = text.split('\n');
      expect(subscribedLine).toBe('');
      expect(missingLine, 'the tail\'s second line').toMatch(/^\{/);
      expect((JSON.parse(missingLine!) as { missing: string }).missing).toMatch(/^ghost-exporter \(127\.0\.0\.1:\d+\): /);
      const page = await newPage('?since=2h');
      const banner = await page.waitForSelector('[data-testid=missing-replicas]', { timeout: 30_000 });
      expect(await banner.textContent()).toMatch(/their flows are missing here: ghost-exporter \(127\.0\.0\.1:\d+\): /);
      await shot(page, 'missing-replica');
      await page.context().close();
    } finally {
      await ghost.close();
    }
    // Its heartbeats stop: after 10 s of silence it is not asked, and the answers are whole again.
    await until(async () => (await stack.api<{ missing?: string }>('api/map?since=2h')).missing === undefined, 30_000, 'answers whole again');
    const page = await newPage('?since=2h');
    await page.waitForSelector('[data-testid=map-summary]');
    expect(await page.$('[data-testid=missing-replicas]')).toBeNull();
    await page.context().close();
  }, 120_000);
});
