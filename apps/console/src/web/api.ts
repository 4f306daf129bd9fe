// The page's calls to the console API, with the Observer's token: taken once from the URL
// fragment (#token=…, as `npm run up` prints it), else asked for, and kept for this tab only.
const TOKEN_KEY = 'kappa-token';

export function takeTokenFromUrl(): void {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m?.[1]) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
}

export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly position?: number,
  ) {
    super(message);
  }
}

function headers(): HeadersInit {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

export async function getJson<T>(path: string, params: Record<string, string | number | undefined>): Promise<T> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') query.set(k, String(v));
  const response = await fetch(`${path}?${query}`, { headers: headers() });
  const body = (await response.json()) as T & { error?: string; position?: number; missing?: string };
  if (response.status === 401) window.dispatchEvent(new Event('kappa-unauthorized'));
  if (!response.ok) throw new ApiError(response.status, body.error ?? response.statusText, body.position);
  // A relayed answer that lacks replicas says which (the frame shows it until an answer is whole).
  window.dispatchEvent(new CustomEvent('kappa-missing', { detail: body.missing }));
  return body;
}

/** Reads /api/tail (one JSON flow per line) until the signal aborts. */
/** `onSubscribed` runs once the Observer follows (the stream's first, empty line): from then on every new flow arrives. */
export async function tail(filter: string, verdict: Verdict, onFlow: (flow: FlowItem) => void, signal: AbortSignal, onSubscribed: () => void = () => undefined): Promise<void> {
  const response = await fetch(`/api/tail?${new URLSearchParams({ filter, verdict })}`, { headers: headers(), signal });
  if (!response.ok || !response.body) {
    const body = (await response.json().catch(() => ({}))) as { error?: string; position?: number };
    throw new ApiError(response.status, body.error ?? response.statusText, body.position);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  let subscribed = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    if (!subscribed && value.length > 0) {
      subscribed = true;
      onSubscribed();
    }
    buffered += value;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) {
        const item = JSON.parse(line) as FlowItem & { error?: string; missing?: string };
        if (item.error) throw new ApiError(502, item.error);
        if (item.missing !== undefined) window.dispatchEvent(new CustomEvent('kappa-missing', { detail: item.missing }));
        else onFlow(item);
      }
    }
  }
}

export interface EndJson {
  ip?: string;
  port?: number;
  process?: { name?: string; pid?: number };
  kube?: { objectName?: string; objectNamespace?: string; workloadName?: string; objectType?: string };
  /** The DNS name this end resolved the other end's address from. */
  peerDnsName?: string;
}

export interface FlowJson {
  id?: string;
  node?: string;
  vantage?: string;
  endNs?: string;
  protocol?: string;
  src?: EndJson;
  dst?: EndJson;
  bytes?: string;
  reverseBytes?: string;
  packets?: string;
  reversePackets?: string;
  tcp?: { srttUs?: number; retransmits?: number };
  joined?: boolean;
  drops?: { packets?: string; bytes?: string; reason?: string; reasonPackets?: string };
  dns?: { queryName?: string; queryType?: number; rcode?: number; queries?: string; responses?: string; latencyCount?: string; latencySumUs?: string; latencyMaxUs?: string };
}

export interface FlowItem {
  flow: FlowJson;
  receivedNs: string;
}

/** A range as the API takes it: unix ns or a duration back from now ("15m"); "" for now. */
export interface Range {
  since: string;
  until: string;
}

/** The filter bar's verdict, as `kappa observe --verdict` takes it ('' for every flow). */
export type Verdict = '' | 'dropped' | 'forwarded';

/** "1h" / "2026-12-04T07:00:00Z" / unix ns → unix ns for the API (RFC 3339 converted here). */
export function rangeParam(text: string): string {
  const t = text.trim();
  if (t === '' || /^\d+$/.test(t) || /^\d+[smhd]$/.test(t)) return t;
  const ms = Date.parse(t);
  if (Number.isNaN(ms)) throw new ApiError(400, `"${t}" is not a time: use 15m, 1h, an RFC 3339 time or unix ns`);
  return `${BigInt(ms) * 1_000_000n}`;
}

/** Seconds a range covers, for rates. */
export function rangeSeconds(range: Range, nowMs = Date.now()): number {
  const toMs = (text: string, dflt: number) => {
    const p = rangeParam(text);
    if (p === '') return dflt;
    const m = /^(\d+)([smhd])$/.exec(p);
    if (m) return nowMs - Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
    return Number(BigInt(p) / 1_000_000n);
  };
  return Math.max(1, (toMs(range.until, nowMs) - toMs(range.since, nowMs - 3_600_000)) / 1000);
}
