// The console's frame: one time range and one filter (the filter language) shared by every
// page, the pages themselves, and the side panel that lists the flows of what was clicked.
import { useEffect, useState } from 'react';
import { ApiError, setToken } from './api.js';
import type { Range, Verdict } from './api.js';
import { FlowTable } from './FlowTable.js';
import type { Level } from './graph.js';
import { MapView } from './MapView.js';
import type { Selection } from './MapView.js';
import { FlowsView, HealthView, TopView, useFlows } from './views.js';

type Page = 'map' | 'top' | 'flows' | 'health';
const pages: [Page, string][] = [
  ['map', 'Service map'],
  ['top', 'Top talkers'],
  ['flows', 'Flows'],
  ['health', 'Health'],
];

const and = (a: string, b: string) => (a.trim() && b.trim() ? `(${a}) and (${b})` : a.trim() || b.trim());

function SidePanel({ selection, range, filter, verdict, onClose }: { selection: Selection; range: Range; filter: string; verdict: Verdict; onClose: () => void }) {
  const query = and(filter, selection.filter);
  const { flows, error, loading } = useFlows(range, query, verdict, 500);
  return (
    <aside className="panel" data-testid="flow-panel">
      <header>
        <strong data-testid="panel-title">{selection.title}</strong> <button onClick={onClose}>close</button>
      </header>
      <code className="muted">
        {query}
        {verdict ? ` · verdict ${verdict}` : ''}
      </code>
      {loading && <p className="muted">loading…</p>}
      {error && <p className="error">{error}</p>}
      {!loading && <FlowTable flows={flows} empty="no flows" />}
    </aside>
  );
}

/** A link can carry the view: ?page=map&level=pod&since=15m&until=&filter=…&verdict=dropped */
const initial = new URLSearchParams(location.search);
const param = (name: string, dflt: string) => initial.get(name) ?? dflt;

export function App() {
  const [page, setPage] = useState<Page>(param('page', 'map') as Page);
  const [range, setRange] = useState<Range>({ since: param('since', '1h'), until: param('until', '') });
  const [draft, setDraft] = useState({ filter: param('filter', ''), since: param('since', '1h'), until: param('until', ''), verdict: param('verdict', '') as Verdict });
  const [filter, setFilter] = useState(param('filter', ''));
  const [verdict, setVerdict] = useState<Verdict>(param('verdict', '') as Verdict);
  const [level, setLevel] = useState<Level>(param('level', 'workload') as Level);
  const [selection, setSelection] = useState<Selection | undefined>();
  const [filterError, setFilterError] = useState<ApiError | undefined>();
  const [needToken, setNeedToken] = useState(false);
  useEffect(() => {
    const ask = () => setNeedToken(true);
    window.addEventListener('kappa-unauthorized', ask);
    return () => window.removeEventListener('kappa-unauthorized', ask);
  }, []);
  // Exporter replicas that did not answer the latest call (the relay's trailer): what is shown lacks their flows.
  const [missing, setMissing] = useState<string | undefined>();
  useEffect(() => {
    const heard = (e: Event) => setMissing((e as CustomEvent<string | undefined>).detail);
    window.addEventListener('kappa-missing', heard);
    return () => window.removeEventListener('kappa-missing', heard);
  }, []);
  const apply = () => {
    setFilter(draft.filter);
    setVerdict(draft.verdict);
    setRange({ since: draft.since, until: draft.until });
    setSelection(undefined);
  };
  const onFilterError = (e: ApiError | undefined) => setFilterError(e);
  return (
    <div className="app">
      <header className="top">
        <h1>kappa</h1>
        <nav>
          {pages.map(([id, name]) => (
            <button key={id} data-testid={`nav-${id}`} className={page === id ? 'active' : ''} onClick={() => setPage(id)}>
              {name}
            </button>
          ))}
        </nav>
      </header>
      {missing && (
        <p className="error" data-testid="missing-replicas">
          Incomplete: exporter replicas did not answer, their flows are missing here: {missing}
        </p>
      )}
      {needToken && (
        <form
          className="token"
          onSubmit={(e) => {
            e.preventDefault();
            setToken((new FormData(e.currentTarget).get('token') as string) ?? '');
            location.reload();
          }}
        >
          The console needs the Observer's token (the file of <code>--token-file</code>; <code>.kappa/grpc-token</code> under <code>npm run up</code>): <input name="token" type="password" /> <button>use</button>
        </form>
      )}
      <form
        className="query"
        onSubmit={(e) => {
          e.preventDefault();
          apply();
        }}
      >
        <input className="filter" data-testid="filter" placeholder='filter, e.g. src.namespace == "shop" and dst.port == 443 and not dst.workload == "redis"' value={draft.filter} onChange={(e) => setDraft({ ...draft, filter: e.target.value })} />
        <label title="kappa observe --verdict: flows of which the kernel dropped packets, or none">
          verdict{' '}
          <select data-testid="verdict" value={draft.verdict} onChange={(e) => setDraft({ ...draft, verdict: e.target.value as Verdict })}>
            <option value="">any</option>
            <option value="dropped">dropped</option>
            <option value="forwarded">forwarded</option>
          </select>
        </label>
        <label>
          from <input data-testid="since" size={22} value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value })} title="15m, 1h, 24h back, an RFC 3339 time or unix ns" />
        </label>
        <label>
          to <input data-testid="until" size={22} value={draft.until} placeholder="now" onChange={(e) => setDraft({ ...draft, until: e.target.value })} />
        </label>
        <button data-testid="apply">apply</button>
      </form>
      {filterError && filterError.position !== undefined && (
        <pre className="error" data-testid="filter-error">
          {filterError.message}
        </pre>
      )}
      <main>
        <div className="page">
          {page === 'map' && <MapView range={range} filter={filter} verdict={verdict} level={level} setLevel={setLevel} onSelect={setSelection} onFilterError={onFilterError} />}
          {page === 'top' && <TopView range={range} filter={filter} verdict={verdict} />}
          {page === 'flows' && <FlowsView range={range} filter={filter} verdict={verdict} onFilterError={onFilterError} />}
          {page === 'health' && <HealthView />}
        </div>
        {selection && page === 'map' && <SidePanel selection={selection} range={range} filter={filter} verdict={verdict} onClose={() => setSelection(undefined)} />}
      </main>
    </div>
  );
}
