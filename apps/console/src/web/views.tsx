// The console's other pages: the flow table with a live tail, top talkers, and health (what
// `kappa status` shows, plus the flow store).
import { useEffect, useState } from 'react';
import { ApiError, getJson, rangeParam, tail } from './api.js';
import type { FlowItem, Range, Verdict } from './api.js';
import { FlowTable } from './FlowTable.js';
import { humanBytes, humanRtt } from './graph.js';
import type { AggregateJson, Group } from './graph.js';

export function useFlows(range: Range, filter: string, verdict: Verdict, last: number, onFilterError?: (e: ApiError | undefined) => void) {
  const [flows, setFlows] = useState<FlowItem[]>([]);
  const [error, setError] = useState<string | undefined>();
  const [loading, setLoading] = useState(false);
  useEffect(() => {
    let gone = false;
    setLoading(true);
    getJson<{ flows: FlowItem[] }>('/api/flows', { since: rangeParam(range.since), until: rangeParam(range.until), filter, verdict, last })
      .then((r) => {
        if (gone) return;
        setFlows(r.flows);
        setError(undefined);
        onFilterError?.(undefined);
      })
      .catch((e: unknown) => {
        if (gone) return;
        if (e instanceof ApiError && e.position !== undefined) onFilterError?.(e);
        setError(e instanceof Error ? e.message : String(e));
      })
      .finally(() => !gone && setLoading(false));
    return () => {
      gone = true;
    };
  }, [range.since, range.until, filter, verdict, last]);
  return { flows, error, loading };
}

export function FlowsView({ range, filter, verdict, onFilterError }: { range: Range; filter: string; verdict: Verdict; onFilterError: (e: ApiError | undefined) => void }) {
  const [live, setLive] = useState(false);
  const [tailed, setTailed] = useState<FlowItem[]>([]);
  const [tailError, setTailError] = useState<string | undefined>();
  const [subscribed, setSubscribed] = useState(false);
  const { flows, error, loading } = useFlows(range, filter, verdict, 1000, onFilterError);
  useEffect(() => {
    if (!live) return;
    setTailed([]);
    setSubscribed(false);
    const abort = new AbortController();
    tail(filter, verdict, (item) => setTailed((t) => [...t.slice(-999), item]), abort.signal, () => setSubscribed(true)).catch((e: unknown) => {
      if (!abort.signal.aborted) setTailError(e instanceof Error ? e.message : String(e));
    });
    return () => abort.abort();
  }, [live, filter, verdict]);
  return (
    <section>
      <div className="toolbar">
        <label>
          <input type="checkbox" data-testid="live" checked={live} onChange={(e) => setLive(e.target.checked)} /> live tail (new flows as they arrive)
        </label>
        {loading && <span className="muted"> loading…</span>}
      </div>
      {error && <p className="error">{error}</p>}
      {tailError && <p className="error">{tailError}</p>}
      {live ? <FlowTable flows={tailed} empty={subscribed ? 'waiting for new flows…' : 'connecting…'} /> : <FlowTable flows={flows} empty="no flows in this range match" />}
    </section>
  );
}

const groupLabel = (g: Group | undefined) => (!g ? '' : g.external ? 'external' : g.name ? `${g.namespace ? `${g.namespace}/` : ''}${g.name}` : (g.namespace ?? ''));

export function TopView({ range, filter, verdict }: { range: Range; filter: string; verdict: Verdict }) {
  const [level, setLevel] = useState('workload');
  const [side, setSide] = useState('pair');
  const [by, setBy] = useState('bytes');
  const [rows, setRows] = useState<AggregateJson[]>([]);
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    let gone = false;
    getJson<{ aggregates?: AggregateJson[] }>('/api/top', { since: rangeParam(range.since), until: rangeParam(range.until), filter, verdict, level, side, by, limit: 25 })
      .then((r) => !gone && (setRows(r.aggregates ?? []), setError(undefined)))
      .catch((e: unknown) => !gone && setError(e instanceof Error ? e.message : String(e)));
    return () => {
      gone = true;
    };
  }, [range.since, range.until, filter, verdict, level, side, by]);
  const select = (value: string, set: (v: string) => void, options: string[], id: string) => (
    <select data-testid={id} value={value} onChange={(e) => set(e.target.value)}>
      {options.map((o) => (
        <option key={o}>{o}</option>
      ))}
    </select>
  );
  return (
    <section>
      <div className="toolbar">
        level {select(level, setLevel, ['namespace', 'workload', 'pod', 'process', 'node', 'ip'], 'top-level')} side {select(side, setSide, ['pair', 'src', 'dst'], 'top-side')} by{' '}
        {select(by, setBy, ['bytes', 'packets', 'retransmits', 'rtt', 'dropped'], 'top-by')}
      </div>
      {error && <p className="error">{error}</p>}
      <table data-testid="top-table">
        <thead>
          <tr>
            <th>{side === 'dst' ? 'destination' : 'source'}</th>
            {side === 'pair' && <th>destination</th>}
            <th className="num">bytes →</th>
            <th className="num">bytes ←</th>
            <th className="num">packets</th>
            <th className="num">retransmits</th>
            <th className="num">rtt (mean)</th>
            <th className="num">dropped</th>
            <th className="num">records</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={i} data-testid="top-row">
              <td>{groupLabel(side === 'dst' ? r.dst : r.src)}</td>
              {side === 'pair' && <td>{groupLabel(r.dst)}</td>}
              <td className="num">{humanBytes(Number(r.bytes ?? 0))}</td>
              <td className="num">{humanBytes(Number(r.reverseBytes ?? 0))}</td>
              <td className="num">{Number(r.packets ?? 0) + Number(r.reversePackets ?? 0)}</td>
              <td className="num">{r.retransmits ?? 0}</td>
              <td className="num">{humanRtt(r.rttAvgUs ?? 0)}</td>
              <td className="num">{r.droppedPackets ?? 0}</td>
              <td className="num">{r.records ?? 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

interface StageStatusJson {
  stage?: string;
  instance?: string;
  node?: string;
  startedNs?: string;
  sentNs?: string;
  ready?: boolean;
  recordsIn?: string;
  recordsOut?: string;
  lag?: string;
  lost?: Record<string, string>;
}

interface StatusJson {
  instances?: { first?: StageStatusJson; last?: StageStatusJson }[];
  dlq?: Record<string, string>;
  store?: { enabled?: boolean; records?: string; bytes?: string; maxBytes?: string; retentionNs?: string; oldestNs?: string; newestNs?: string; segments?: number; expiredRecords?: string };
}

const STAGES = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];

function rate(first: StageStatusJson, last: StageStatusJson, key: 'recordsIn' | 'recordsOut'): number {
  const from = first === last || first.sentNs === last.sentNs ? { [key]: '0', sentNs: last.startedNs } : first;
  const seconds = (Number(last.sentNs ?? 0) - Number(from.sentNs ?? 0)) / 1e9;
  return seconds > 0 ? (Number(last[key] ?? 0) - Number(from[key] ?? 0)) / seconds : 0;
}

export function HealthView() {
  const [status, setStatus] = useState<StatusJson | undefined>();
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    const load = () =>
      getJson<StatusJson>('/api/status', {})
        .then((s) => (setStatus(s), setError(undefined)))
        .catch((e: unknown) => setError(e instanceof Error ? e.message : String(e)));
    void load();
    const timer = setInterval(load, 3000);
    return () => clearInterval(timer);
  }, []);
  const instances = (status?.instances ?? []).filter((i) => i.last).sort((a, b) => STAGES.indexOf(a.last!.stage ?? '') - STAGES.indexOf(b.last!.stage ?? '') || (a.last!.instance ?? '').localeCompare(b.last!.instance ?? ''));
  const missing = STAGES.filter((s) => !instances.some((i) => i.last!.stage === s));
  const notReady = STAGES.filter((s) => !missing.includes(s) && !instances.some((i) => i.last!.stage === s && i.last!.ready));
  const store = status?.store;
  return (
    <section>
      {error && <p className="error">{error}</p>}
      <p data-testid="health-summary" className={missing.length + notReady.length === 0 ? 'ok' : 'error'}>
        {status === undefined ? 'asking the exporter…' : missing.length + notReady.length === 0 ? `all ${STAGES.length} stages ready` : [missing.length ? `missing (no heartbeat): ${missing.join(', ')}` : '', notReady.length ? `not ready: ${notReady.join(', ')}` : ''].filter(Boolean).join(' · ')}
      </p>
      <table data-testid="health-table">
        <thead>
          <tr>
            <th>stage</th>
            <th>instance</th>
            <th>node</th>
            <th>ready</th>
            <th className="num">in/s</th>
            <th className="num">out/s</th>
            <th className="num">lag</th>
            <th className="num">dlq</th>
            <th className="num">lost</th>
            <th className="num">up</th>
          </tr>
        </thead>
        <tbody>
          {instances.map(({ first, last }) => (
            <tr key={`${last!.stage}/${last!.instance}`} data-testid="health-row" data-stage={last!.stage}>
              <td>{last!.stage}</td>
              <td>{last!.instance}</td>
              <td>{last!.node}</td>
              <td>{last!.ready ? 'yes' : 'NO'}</td>
              <td className="num">{rate(first ?? last!, last!, 'recordsIn').toFixed(1)}</td>
              <td className="num">{rate(first ?? last!, last!, 'recordsOut').toFixed(1)}</td>
              <td className="num">{last!.lag ?? 0}</td>
              <td className="num">{status?.dlq?.[last!.stage ?? ''] ?? 0}</td>
              <td className="num">{Object.values(last!.lost ?? {}).reduce((n, v) => n + Number(v), 0)}</td>
              <td className="num">{Math.round((Number(last!.sentNs ?? 0) - Number(last!.startedNs ?? 0)) / 1e9)} s</td>
            </tr>
          ))}
        </tbody>
      </table>
      {store && (
        <p data-testid="store-summary">
          flow store: {store.enabled ? `${store.records} records in ${store.segments} segments, ${humanBytes(Number(store.bytes ?? 0))} of ${humanBytes(Number(store.maxBytes ?? 0))}, kept ${Math.round(Number(store.retentionNs ?? 0) / 3.6e12)} h; ${store.expiredRecords} dropped by retention` : 'off (--store=false)'}
        </p>
      )}
    </section>
  );
}
