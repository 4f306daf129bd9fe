// A test Kubernetes API server that speaks the real list + watch protocol, so
// `@kubernetes/client-node` (informers, Watch, the typed APIs) runs against it unmodified:
// - lists page with limit/continue over a consistent snapshot, sorted by key as etcd returns them;
// - list and watch honour the resourceVersion rules (unset: most recent; "0": any; N with
//   resourceVersionMatch NotOlderThan or Exact; too large → 504 after a wait; compacted → 410);
// - watches replay history from a resourceVersion, send bookmarks when asked, send the initial
//   events of a streaming list (sendInitialEvents), and end on a server-side timeout
//   (timeoutSeconds, else a random time in [minRequestTimeout, 2 × minRequestTimeout]);
// - 429 (with Retry-After), 403 (an RBAC denial as kube-apiserver words it), 500/503/504 on demand.
// Tests mutate objects directly, compact history, drop watches and restart it on the same port.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

/** A Kubernetes object as JSON: apiVersion, kind, metadata, and whatever else it carries. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeObjectMeta;
  [field: string]: unknown;
}

export interface KubeObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
  [field: string]: unknown;
}

/** One resource type the server knows: where it lives in the API and whether it is namespaced. */
export interface KubeResourceType {
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** The resources kappa's tagger watches. */
export const kubeResourceTypes: readonly KubeResourceType[] = [
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', kind: 'EndpointSlice', namespaced: true },
  { group: 'apps', version: 'v1', plural: 'replicasets', kind: 'ReplicaSet', namespaced: true },
  { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment', namespaced: true },
  { group: 'apps', version: 'v1', plural: 'statefulsets', kind: 'StatefulSet', namespaced: true },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true },
  { group: 'batch', version: 'v1', plural: 'jobs', kind: 'Job', namespaced: true },
  { group: 'batch', version: 'v1', plural: 'cronjobs', kind: 'CronJob', namespaced: true },
];

export type KubeWatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent {
  type: KubeWatchEventType;
  object: KubeObject;
  /** The object before this event (undefined for ADDED): lets a list read an older snapshot. */
  previous: KubeObject | undefined;
  resourceVersion: number;
}

interface ResourceState {
  type: KubeResourceType;
  apiVersion: string;
  /** key "namespace/name" → object. */
  objects: Map<string, KubeObject>;
  /** Events newer than the compaction point, oldest first. */
  history: StoredEvent[];
  watchers: Set<Watcher>;
}

interface Watcher {
  response: ServerResponse;
  filter: (object: KubeObject) => boolean;
  bookmarks: ReturnType<typeof setInterval> | undefined;
  timeout: ReturnType<typeof setTimeout> | undefined;
}

export type KubeVerb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'delete';

/** One request the server answered, for tests that assert what the client did (e.g. a relist). */
export interface KubeApiRequest {
  method: string;
  path: string;
  verb: KubeVerb | undefined;
  watch: boolean;
  resourceVersion: string | undefined;
  /** Every query parameter as sent (limit, continue, resourceVersionMatch, timeoutSeconds, …). */
  query: Record<string, string>;
  status: number;
}

/** A failure the server answers instead of serving, until cleared or `times` requests got it. */
export interface KubeFault {
  status: 403 | 429 | 500 | 503 | 504;
  /** Only requests of this verb (default: any). */
  verb?: KubeVerb;
  /** Only requests for this resource, by plural (default: any). */
  resource?: string;
  /** How many requests get it (default: every matching request until `clear()`). */
  times?: number;
  /** 429 and 503: the Retry-After header and details.retryAfterSeconds (default 1). */
  retryAfterSeconds?: number;
}

export interface KubeFaultHandle {
  /** Requests answered with the fault so far. */
  readonly hits: number;
  clear(): void;
}

export interface KubeApiServerOptions {
  /** Serve HTTPS with a fresh self-signed certificate (as a real API server does). Default true. */
  tls?: boolean;
  /** Bearer token the client must send; a request without it gets 401. Default: a random token. */
  token?: string;
  /** BOOKMARK interval for watches that ask for bookmarks. Default 1 s. */
  bookmarkIntervalMs?: number;
  /** Events kept per resource for watches that resume; older ones are compacted. Default 100 000. */
  historyLimit?: number;
  /** kube-apiserver --min-request-timeout: a watch without timeoutSeconds ends after a random
   *  time between this and twice this. Default 1800 s, as kube-apiserver. */
  minRequestTimeoutMs?: number;
  /** How long a list or watch from a resourceVersion newer than the server's waits for it before
   *  504 "Too large resource version". Default 3 s, as kube-apiserver's watch cache. */
  tooLargeResourceVersionWaitMs?: number;
  /** The user named in 403 answers. */
  user?: string;
}

export interface KubeApiServer {
  readonly url: string;
  readonly port: number;
  readonly token: string;
  /** A kubeconfig (JSON, which is valid YAML) for this server. */
  readonly kubeconfig: string;
  /** The kubeconfig written to a file in a temporary folder. */
  readonly kubeconfigPath: string;
  /** Every request answered so far. */
  readonly requests: readonly KubeApiRequest[];
  /** The current (global) resourceVersion. */
  readonly resourceVersion: number;
  /** Watch connections currently open. */
  readonly openWatches: number;
  /** Creates or replaces an object (by apiVersion, kind, namespace, name); returns what is stored. */
  apply(object: KubeObject): KubeObject;
  /** Deletes an object; returns it, or undefined if it did not exist. */
  remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined;
  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined;
  list(apiVersion: string, kind: string): KubeObject[];
  /** Forgets all watch history: a watch resuming from any resourceVersion handed out so far gets
   *  410 Gone and must relist, and so does a continue token. Open watches stay open; follow with
   *  dropWatches() to force it. */
  compact(): void;
  /** Cuts every open watch connection abruptly (as a load balancer or network failure would), or
   *  with `{ graceful: true }` ends each stream cleanly (as an API server's watch timeout does). */
  dropWatches(options?: { graceful?: boolean }): void;
  /** Answers matching requests with a failure instead of serving them. */
  fail(fault: KubeFault): KubeFaultHandle;
  /** Stops listening and cuts every connection; objects are kept (etcd survives). */
  stop(): Promise<void>;
  /** Listens again on the same port with the same objects. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops for good and removes the temporary folder. */
  close(): Promise<void>;
}

type Selector = (object: KubeObject) => boolean;

function parseTerms(text: string | null): { key: string; value: string | undefined; equal: boolean }[] {
  if (!text) return [];
  return text.split(',').map((term) => term.trim()).filter(Boolean).map((term) => {
    const notEqual = /^([^!=]+)!=(.*)$/.exec(term);
    if (notEqual) return { key: notEqual[1]!.trim(), value: notEqual[2]!.trim(), equal: false };
    const equal = /^([^!=]+)==?(.*)$/.exec(term);
    if (equal) return { key: equal[1]!.trim(), value: equal[2]!.trim(), equal: true };
    return { key: term.replace(/^!/, ''), value: undefined, equal: !term.startsWith('!') };
  });
}

function parseLabelSelector(text: string | null): Selector {
  const terms = parseTerms(text);
  return (object) =>
    terms.every(({ key, value, equal }) => {
      const actual = object.metadata?.labels?.[key];
      if (value === undefined) return (actual !== undefined) === equal;
      return equal ? actual === value : actual !== value;
    });
}

/** Field selectors by dotted path (`spec.nodeName=node-a`, `metadata.namespace!=kube-system`). */
function parseFieldSelector(text: string | null): Selector {
  const terms = parseTerms(text);
  return (object) =>
    terms.every(({ key, value, equal }) => {
      let at: unknown = object;
      for (const part of key.split('.')) at = at !== null && typeof at === 'object' ? (at as Record<string, unknown>)[part] : undefined;
      const actual = at === undefined || at === null ? '' : String(at);
      return equal ? actual === (value ?? '') : actual !== (value ?? '');
    });
}

function apiVersionOf(type: KubeResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

function keyOf(object: KubeObject): string {
  return objectKey(object.metadata?.namespace, object.metadata?.name ?? '');
}

function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>): KubeObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

class HttpFailure extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const gone = (message: string) => new HttpFailure(410, 'Expired', message);
const badRequest = (message: string) => new HttpFailure(400, 'BadRequest', message);

function tooLarge(requested: number, current: number): HttpFailure {
  return new HttpFailure(
    504,
    'Timeout',
    `Too large resource version: ${requested}, current: ${current}`,
    { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 },
    { 'retry-after': '1' },
  );
}

function selfSignedCertificate(dir: string): { cert: string; key: string } {
  const certPath = join(dir, 'apiserver.crt');
  const keyPath = join(dir, 'apiserver.key');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=kappa-test-apiserver',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' });
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
}

/** The continue token: the snapshot's resourceVersion and the last key served, base64 JSON as
 *  kube-apiserver's (which also carries "v": "meta.k8s.io/v1"). */
interface ContinueToken {
  v: string;
  rv: number;
  start: string;
}

function encodeContinue(rv: number, lastKey: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start: `${lastKey}\u0000` } satisfies ContinueToken)).toString('base64url');
}

function decodeContinue(text: string): ContinueToken {
  try {
    const token = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as ContinueToken;
    if (token.v !== 'meta.k8s.io/v1' || !Number.isInteger(token.rv) || typeof token.start !== 'string') throw new Error('bad token');
    return token;
  } catch {
    throw badRequest(`continue key is not valid: ${text}`);
  }
}

export async function startKubeApiServer(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const tls = options.tls ?? true;
  const token = options.token ?? randomUUID();
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const historyLimit = options.historyLimit ?? 100_000;
  const minRequestTimeoutMs = options.minRequestTimeoutMs ?? 1_800_000;
  const tooLargeWaitMs = options.tooLargeResourceVersionWaitMs ?? 3000;
  const user = options.user ?? 'system:serviceaccount:kappa:kappa-k8s-tagger';
  const dir = mkdtempSync(join(tmpdir(), 'kappa-kube-api-'));
  const port = await freePort();
  const certificate = tls ? selfSignedCertificate(dir) : undefined;
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;

  let resourceVersion = 1;
  const requests: KubeApiRequest[] = [];
  const resources = new Map<string, ResourceState>();
  const byKind = new Map<string, ResourceState>();
  for (const type of kubeResourceTypes) {
    const state: ResourceState = { type, apiVersion: apiVersionOf(type), objects: new Map(), history: [], watchers: new Set() };
    resources.set(`${type.group}/${type.version}/${type.plural}`, state);
    byKind.set(`${state.apiVersion}/${type.kind}`, state);
  }
  // Per resource: a read at this resourceVersion or older is answered 410 Gone, because the
  // events after it are no longer kept.
  const expiredThrough = new Map<ResourceState, number>();
  const faults = new Set<{ fault: KubeFault; hits: number }>();
  /** Requests waiting for the resourceVersion to reach a value (a "too large" read). */
  const versionWaiters = new Set<() => void>();
  /** Sorted snapshots of older resourceVersions, for continue tokens (small LRU). */
  const snapshots = new Map<string, KubeObject[]>();

  function stateFor(apiVersion: string, kind: string): ResourceState {
    const state = byKind.get(`${apiVersion}/${kind}`);
    if (!state) throw new Error(`the test API server does not serve ${apiVersion} ${kind}`);
    return state;
  }

  function sendEvent(watcher: Watcher, type: string, object: KubeObject): void {
    watcher.response.write(`${JSON.stringify({ type, object })}\n`);
  }

  function bumpVersion(): number {
    resourceVersion += 1;
    for (const wake of [...versionWaiters]) wake();
    return resourceVersion;
  }

  function record(state: ResourceState, type: KubeWatchEventType, object: KubeObject, previous: KubeObject | undefined): void {
    const event: StoredEvent = { type, object, previous, resourceVersion };
    state.history.push(event);
    if (state.history.length > historyLimit) {
      const dropped = state.history.splice(0, state.history.length - historyLimit);
      expiredThrough.set(state, dropped[dropped.length - 1]!.resourceVersion - 1);
    }
    for (const watcher of state.watchers) if (watcher.filter(object)) sendEvent(watcher, type, object);
  }

  function apply(input: KubeObject): KubeObject {
    const apiVersion = input.apiVersion ?? '';
    const kind = input.kind ?? '';
    const state = stateFor(apiVersion, kind);
    const name = input.metadata?.name;
    if (!name) throw new Error(`a ${kind} needs metadata.name`);
    const namespace = state.type.namespaced ? (input.metadata?.namespace ?? 'default') : undefined;
    const key = objectKey(namespace, name);
    const previous = state.objects.get(key);
    bumpVersion();
    const object: KubeObject = structuredClone(input);
    object.metadata = {
      ...object.metadata,
      name,
      ...(namespace !== undefined ? { namespace } : {}),
      uid: previous?.metadata?.uid ?? input.metadata?.uid ?? randomUUID(),
      resourceVersion: String(resourceVersion),
      creationTimestamp:
        previous?.metadata?.creationTimestamp ?? input.metadata?.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    if (!state.type.namespaced) delete object.metadata.namespace;
    state.objects.set(key, object);
    record(state, previous ? 'MODIFIED' : 'ADDED', object, previous);
    return structuredClone(object);
  }

  function remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const state = stateFor(apiVersion, kind);
    const key = objectKey(state.type.namespaced ? (namespace ?? 'default') : undefined, name);
    const previous = state.objects.get(key);
    if (!previous) return undefined;
    state.objects.delete(key);
    bumpVersion();
    const object: KubeObject = { ...previous, metadata: { ...previous.metadata, resourceVersion: String(resourceVersion) } };
    record(state, 'DELETED', object, previous);
    return structuredClone(object);
  }

  /** The resource's objects as they were at resourceVersion `rv`, sorted by key. */
  function snapshotAt(state: ResourceState, rv: number): KubeObject[] {
    const sorted = (objects: Iterable<KubeObject>) => [...objects].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
    if (rv >= resourceVersion) return sorted(state.objects.values());
    if (rv <= (expiredThrough.get(state) ?? 0)) throw gone(`too old resource version: ${rv} (${(expiredThrough.get(state) ?? 0) + 1})`);
    const cacheKey = `${state.type.plural}@${rv}`;
    const cached = snapshots.get(cacheKey);
    if (cached) return cached;
    const objects = new Map(state.objects);
    for (let i = state.history.length - 1; i >= 0; i--) {
      const event = state.history[i]!;
      if (event.resourceVersion <= rv) break;
      const key = keyOf(event.object);
      if (event.previous) objects.set(key, event.previous);
      else objects.delete(key);
    }
    const result = sorted(objects.values());
    snapshots.set(cacheKey, result);
    while (snapshots.size > 4) snapshots.delete(snapshots.keys().next().value!);
    return result;
  }

  /** A read that needs resourceVersion ≥ rv: waits for it up to tooLargeWaitMs, then 504. */
  async function awaitVersion(rv: number): Promise<void> {
    if (rv <= resourceVersion) return;
    await new Promise<void>((resolve, reject) => {
      const wake = () => {
        if (resourceVersion < rv) return;
        clearTimeout(timer);
        versionWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(() => {
        versionWaiters.delete(wake);
        reject(tooLarge(rv, resourceVersion));
      }, tooLargeWaitMs);
      versionWaiters.add(wake);
    });
  }

  function parseVersion(text: string): number {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) throw badRequest(`invalid resource version: ${text}`);
    return value;
  }

  function closeWatcher(state: ResourceState, watcher: Watcher, abrupt: boolean): void {
    if (watcher.bookmarks) clearInterval(watcher.bookmarks);
    if (watcher.timeout) clearTimeout(watcher.timeout);
    state.watchers.delete(watcher);
    if (abrupt) watcher.response.socket?.destroy();
    else watcher.response.end();
  }

  function send(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  // /api/v1[/namespaces/{ns}]/{plural}[/{name}] and /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}]
  function route(path: string): { state: ResourceState; namespace: string | undefined; name: string | undefined } | undefined {
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts.length >= 3) {
      group = '';
      version = parts[1]!;
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 4) {
      group = parts[1]!;
      version = parts[2]!;
      rest = parts.slice(3);
    } else {
      return undefined;
    }
    let namespace: string | undefined;
    // "namespaces" is itself a resource: /api/v1/namespaces[/name] vs /api/v1/namespaces/{ns}/pods
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const state = resources.get(`${group}/${version}/${rest[0]}`);
    if (!state || rest.length > 2) return undefined;
    if (namespace !== undefined && !state.type.namespaced) return undefined;
    return { state, namespace, name: rest[1] };
  }

  function scopeFilter(namespace: string | undefined, query: URLSearchParams): Selector {
    const labels = parseLabelSelector(query.get('labelSelector'));
    const fields = parseFieldSelector(query.get('fieldSelector'));
    return (object) => (namespace === undefined || object.metadata?.namespace === namespace) && labels(object) && fields(object);
  }

  async function serveList(res: ServerResponse, state: ResourceState, namespace: string | undefined, query: URLSearchParams): Promise<number> {
    const rvText = query.get('resourceVersion');
    const match = query.get('resourceVersionMatch');
    const continueText = query.get('continue');
    const limit = Number(query.get('limit') ?? '0');
    if (!Number.isInteger(limit) || limit < 0) throw badRequest(`invalid limit: ${query.get('limit')}`);
    if (match !== null && match !== 'Exact' && match !== 'NotOlderThan') throw badRequest(`resourceVersionMatch: Unsupported value: "${match}"`);
    if (match !== null && !rvText) throw badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    if (continueText && rvText) throw badRequest('specifying resource version is not allowed when using continue');
    if (match === 'Exact' && rvText === '0') throw badRequest('resourceVersionMatch "exact" is forbidden for resourceVersion "0"');

    let snapshotRv = resourceVersion;
    let items: KubeObject[];
    let after = '';
    let pageLimit = limit;
    if (continueText) {
      const token = decodeContinue(continueText);
      if (token.rv <= (expiredThrough.get(state) ?? 0)) {
        throw gone('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      snapshotRv = token.rv;
      items = snapshotAt(state, token.rv);
      after = token.start;
    } else if (!rvText) {
      // Most recent: a consistent read.
      items = snapshotAt(state, resourceVersion);
    } else if (rvText === '0' && match !== 'Exact') {
      // Any: served from the watch cache, which does not page.
      items = snapshotAt(state, resourceVersion);
      pageLimit = 0;
    } else {
      const rv = parseVersion(rvText);
      await awaitVersion(rv);
      if (match === 'Exact') {
        snapshotRv = rv;
        items = snapshotAt(state, rv);
      } else {
        snapshotRv = resourceVersion;
        items = snapshotAt(state, resourceVersion);
      }
    }
    const filter = scopeFilter(namespace, query);
    let selected = items.filter((object) => keyOf(object) > after && filter(object));
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshotRv) };
    if (pageLimit > 0 && selected.length > pageLimit) {
      metadata.remainingItemCount = selected.length - pageLimit;
      selected = selected.slice(0, pageLimit);
      metadata.continue = encodeContinue(snapshotRv, keyOf(selected[selected.length - 1]!));
    }
    send(res, 200, { kind: `${state.type.kind}List`, apiVersion: state.apiVersion, metadata, items: selected });
    return 200;
  }

  async function serveWatch(req: IncomingMessage, res: ServerResponse, state: ResourceState, namespace: string | undefined, query: URLSearchParams): Promise<number> {
    const rvText = query.get('resourceVersion') ?? '';
    const match = query.get('resourceVersionMatch');
    const initialEvents = query.get('sendInitialEvents') === 'true';
    const bookmarks = query.get('allowWatchBookmarks') === 'true';
    if (initialEvents && (match !== 'NotOlderThan' || !bookmarks)) {
      throw badRequest('sendInitialEvents: Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true');
    }
    if (!initialEvents && match !== null) throw badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided');
    const from = rvText === '' || rvText === '0' ? undefined : parseVersion(rvText);
    if (from !== undefined) await awaitVersion(from);

    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The client's fetch resolves on the headers; a quiet watch must not hold them back.
    res.flushHeaders();
    const filter = scopeFilter(namespace, query);
    const watcher: Watcher = { response: res, filter, bookmarks: undefined, timeout: undefined };
    if (initialEvents || from === undefined) {
      // Current state as synthetic ADDED events, then changes; a streaming list ends its initial
      // events with a bookmark annotated k8s.io/initial-events-end.
      for (const object of snapshotAt(state, resourceVersion)) if (filter(object)) sendEvent(watcher, 'ADDED', object);
      if (initialEvents) {
        sendEvent(watcher, 'BOOKMARK', {
          kind: state.type.kind,
          apiVersion: state.apiVersion,
          metadata: { resourceVersion: String(resourceVersion), annotations: { 'k8s.io/initial-events-end': 'true' } },
        });
      }
    } else {
      const expired = expiredThrough.get(state) ?? 0;
      if (from <= expired) {
        sendEvent(watcher, 'ERROR', statusBody(410, 'Expired', `too old resource version: ${from} (${expired + 1})`));
        res.end();
        return 200;
      }
      for (const event of state.history) {
        if (event.resourceVersion > from && filter(event.object)) sendEvent(watcher, event.type, event.object);
      }
    }
    state.watchers.add(watcher);
    if (bookmarks) {
      watcher.bookmarks = setInterval(() => {
        sendEvent(watcher, 'BOOKMARK', { kind: state.type.kind, apiVersion: state.apiVersion, metadata: { resourceVersion: String(resourceVersion) } });
      }, bookmarkIntervalMs);
    }
    // Server-side timeout: the client's timeoutSeconds, else kube-apiserver's random spread of
    // --min-request-timeout, so watches do not all end at once.
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? '0');
    const timeoutMs = timeoutSeconds > 0 ? timeoutSeconds * 1000 : minRequestTimeoutMs * (1 + Math.random());
    watcher.timeout = setTimeout(() => closeWatcher(state, watcher, false), timeoutMs);
    req.once('close', () => closeWatcher(state, watcher, false));
    return 200;
  }

  async function readBody(req: IncomingMessage): Promise<KubeObject> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as KubeObject;
  }

  function verbOf(method: string | undefined, name: string | undefined, watch: boolean): KubeVerb | undefined {
    if (method === 'GET') return watch ? 'watch' : name === undefined ? 'list' : 'get';
    if (method === 'POST') return 'create';
    if (method === 'PUT') return 'update';
    if (method === 'DELETE') return 'delete';
    return undefined;
  }

  /** The failure a fault answers, worded as kube-apiserver words it. */
  function faultFailure(fault: KubeFault, state: ResourceState, verb: KubeVerb): HttpFailure {
    const retryAfter = fault.retryAfterSeconds ?? 1;
    switch (fault.status) {
      case 429:
        return new HttpFailure(429, 'TooManyRequests', 'Too many requests, please try again later.', { retryAfterSeconds: retryAfter }, { 'retry-after': String(retryAfter) });
      case 403:
        return new HttpFailure(
          403,
          'Forbidden',
          `${state.type.plural} is forbidden: User "${user}" cannot ${verb} resource "${state.type.plural}" in API group "${state.type.group}" at the cluster scope`,
          { kind: state.type.plural, ...(state.type.group ? { group: state.type.group } : {}) },
        );
      case 503:
        return new HttpFailure(503, 'ServiceUnavailable', 'the server is currently unable to handle the request', { retryAfterSeconds: retryAfter }, { 'retry-after': String(retryAfter) });
      case 504:
        return new HttpFailure(504, 'Timeout', 'Timeout: request did not complete within requested timeout - context deadline exceeded', { retryAfterSeconds: retryAfter });
      default:
        return new HttpFailure(500, 'InternalError', 'Internal error occurred: etcdserver: request timed out');
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse, entry: KubeApiRequest): Promise<number> {
    const requestUrl = new URL(req.url ?? '/', url);
    if (req.headers.authorization !== `Bearer ${token}`) {
      send(res, 401, statusBody(401, 'Unauthorized', 'Unauthorized'));
      return 401;
    }
    const target = route(requestUrl.pathname);
    if (!target) {
      send(res, 404, statusBody(404, 'NotFound', `the server could not find the requested resource (${requestUrl.pathname})`));
      return 404;
    }
    const { state, namespace, name } = target;
    const query = requestUrl.searchParams;
    const watch = query.get('watch') === 'true' || query.get('watch') === '1';
    const verb = verbOf(req.method, name, watch);
    entry.verb = verb;
    for (const active of faults) {
      const { fault } = active;
      if ((fault.verb !== undefined && fault.verb !== verb) || (fault.resource !== undefined && fault.resource !== state.type.plural)) continue;
      active.hits += 1;
      if (fault.times !== undefined && active.hits >= fault.times) faults.delete(active);
      throw faultFailure(fault, state, verb ?? 'get');
    }
    if (verb === 'watch' && name === undefined) return serveWatch(req, res, state, namespace, query);
    if (verb === 'list') return serveList(res, state, namespace, query);
    if (verb === 'get' && name !== undefined) {
      const object = state.objects.get(objectKey(namespace, name));
      if (!object) {
        send(res, 404, statusBody(404, 'NotFound', `${state.type.plural} "${name}" not found`));
        return 404;
      }
      send(res, 200, object);
      return 200;
    }
    if (verb === 'create' && name === undefined) {
      const body = await readBody(req);
      const metadata = { ...body.metadata, ...(namespace !== undefined ? { namespace } : {}) };
      if (state.objects.has(objectKey(state.type.namespaced ? (metadata.namespace ?? 'default') : undefined, metadata.name ?? ''))) {
        send(res, 409, statusBody(409, 'AlreadyExists', `${state.type.plural} "${metadata.name}" already exists`));
        return 409;
      }
      send(res, 201, apply({ ...body, apiVersion: state.apiVersion, kind: state.type.kind, metadata }));
      return 201;
    }
    if (verb === 'update' && name !== undefined) {
      const body = await readBody(req);
      const metadata = { ...body.metadata, name, ...(namespace !== undefined ? { namespace } : {}) };
      send(res, 200, apply({ ...body, apiVersion: state.apiVersion, kind: state.type.kind, metadata }));
      return 200;
    }
    if (verb === 'delete' && name !== undefined) {
      const removed = remove(state.apiVersion, state.type.kind, namespace, name);
      if (!removed) {
        send(res, 404, statusBody(404, 'NotFound', `${state.type.plural} "${name}" not found`));
        return 404;
      }
      send(res, 200, removed);
      return 200;
    }
    send(res, 405, statusBody(405, 'MethodNotAllowed', `${req.method ?? ''} is not supported here`));
    return 405;
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const requestUrl = new URL(req.url ?? '/', url);
    const entry: KubeApiRequest = {
      method: req.method ?? 'GET',
      path: requestUrl.pathname,
      verb: undefined,
      watch: requestUrl.searchParams.get('watch') === 'true',
      resourceVersion: requestUrl.searchParams.get('resourceVersion') ?? undefined,
      query: Object.fromEntries(requestUrl.searchParams),
      status: 0,
    };
    requests.push(entry);
    handle(req, res, entry).then(
      (code) => {
        entry.status = code;
      },
      (error: unknown) => {
        const failure = error instanceof HttpFailure ? error : new HttpFailure(500, 'InternalError', String(error));
        entry.status = failure.code;
        if (!res.headersSent) send(res, failure.code, statusBody(failure.code, failure.reason, failure.message, failure.details), failure.headers);
        else res.end();
      },
    );
  };

  let server: Server | undefined;
  const sockets = new Set<Socket>();

  async function start(): Promise<void> {
    if (server) return;
    const created = certificate ? createHttpsServer({ cert: certificate.cert, key: certificate.key }, onRequest) : createHttpServer(onRequest);
    // Raw TCP connections, TLS handshakes in progress included: stop() must cut them all, or
    // close() waits for a half-open handshake and the "restart" takes minutes.
    created.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      created.once('error', reject);
      created.listen(port, '127.0.0.1', () => resolve());
    });
    server = created;
  }

  async function stop(): Promise<void> {
    const running = server;
    if (!running) return;
    server = undefined;
    for (const state of resources.values()) for (const watcher of [...state.watchers]) closeWatcher(state, watcher, true);
    const closed = new Promise<void>((resolve) => running.close(() => resolve()));
    running.closeAllConnections();
    for (const socket of sockets) socket.destroy();
    await closed;
  }

  const kubeconfig = JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'kappa-test',
          cluster: {
            server: url,
            ...(certificate
              ? { 'certificate-authority-data': Buffer.from(certificate.cert).toString('base64') }
              : { 'insecure-skip-tls-verify': true }),
          },
        },
      ],
      users: [{ name: 'kappa-test', user: { token } }],
      contexts: [{ name: 'kappa-test', context: { cluster: 'kappa-test', user: 'kappa-test' } }],
      'current-context': 'kappa-test',
    },
    null,
    2,
  );
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigPath, kubeconfig);

  await start();

  return {
    url,
    port,
    token,
    kubeconfig,
    kubeconfigPath,
    requests,
    get resourceVersion() {
      return resourceVersion;
    },
    get openWatches() {
      let count = 0;
      for (const state of resources.values()) count += state.watchers.size;
      return count;
    },
    apply,
    remove,
    get: (apiVersion, kind, namespace, name) => {
      const state = stateFor(apiVersion, kind);
      const object = state.objects.get(objectKey(state.type.namespaced ? (namespace ?? 'default') : undefined, name));
      return object ? structuredClone(object) : undefined;
    },
    list: (apiVersion, kind) => [...stateFor(apiVersion, kind).objects.values()].map((object) => structuredClone(object)),
    compact: () => {
      for (const state of resources.values()) {
        state.history = [];
        expiredThrough.set(state, resourceVersion);
      }
      snapshots.clear();
      // Lists from now on hand out a resourceVersion past the compaction point, so the relist
      // the 410 forces leads to a watch that works.
      bumpVersion();
    },
    dropWatches: (dropOptions = {}) => {
      for (const state of resources.values()) for (const watcher of [...state.watchers]) closeWatcher(state, watcher, !dropOptions.graceful);
    },
    fail: (fault) => {
      const active = { fault, hits: 0 };
      faults.add(active);
      return {
        get hits() {
          return active.hits;
        },
        clear: () => void faults.delete(active),
      };
    },
    stop,
    start,
    restart: async () => {
      await stop();
      await start();
    },
    close: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
