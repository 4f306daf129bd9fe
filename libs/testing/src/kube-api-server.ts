// A test Kubernetes API server: real Kubernetes JSON objects served with the real list + watch
// protocol (resourceVersion, JSON-lines watch events, bookmarks, 410 Gone after compaction), so
// `@kubernetes/client-node` informers run against it unmodified. Tests mutate objects directly,
// drop watch connections and restart it on the same port to exercise the client's failure paths.
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
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
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
  namespace: string | undefined;
  selector: LabelSelector;
  bookmarks: ReturnType<typeof setInterval> | undefined;
  timeout: ReturnType<typeof setTimeout> | undefined;
}

/** One request the server answered, for tests that assert what the client did (e.g. a relist). */
export interface KubeApiRequest {
  method: string;
  path: string;
  watch: boolean;
  resourceVersion: string | undefined;
  status: number;
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
   *  410 Gone and must relist. Open watches stay open; follow with dropWatches() to force it. */
  compact(): void;
  /** Cuts every open watch connection abruptly (as a load balancer or network failure would), or
   *  with `{ graceful: true }` ends each stream cleanly (as an API server's watch timeout does). */
  dropWatches(options?: { graceful?: boolean }): void;
  /** Stops listening and cuts every connection; objects are kept (etcd survives). */
  stop(): Promise<void>;
  /** Listens again on the same port with the same objects. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Stops for good and removes the temporary folder. */
  close(): Promise<void>;
}

type LabelSelector = (labels: Record<string, string> | undefined) => boolean;

function parseLabelSelector(text: string | null): LabelSelector {
  if (!text) return () => true;
  const terms = text.split(',').map((term) => term.trim()).filter(Boolean).map((term) => {
    const notEqual = /^([^!=]+)!=(.*)$/.exec(term);
    if (notEqual) return { key: notEqual[1]!.trim(), value: notEqual[2]!.trim(), equal: false };
    const equal = /^([^!=]+)==?(.*)$/.exec(term);
    if (equal) return { key: equal[1]!.trim(), value: equal[2]!.trim(), equal: true };
    return { key: term, value: undefined, equal: true };
  });
  return (labels) =>
    terms.every(({ key, value, equal }) => {
      const actual = labels?.[key];
      if (value === undefined) return actual !== undefined;
      return equal ? actual === value : actual !== value;
    });
}

function apiVersionOf(type: KubeResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

function status(code: number, reason: string, message: string): KubeObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
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

export async function startKubeApiServer(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const tls = options.tls ?? true;
  const token = options.token ?? randomUUID();
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const historyLimit = options.historyLimit ?? 100_000;
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
  // Per resource: a watch resuming from this resourceVersion or older is answered 410 Gone,
  // because the events after it are no longer kept.
  const expiredThrough = new Map<ResourceState, number>();

  function stateFor(apiVersion: string, kind: string): ResourceState {
    const state = byKind.get(`${apiVersion}/${kind}`);
    if (!state) throw new Error(`the test API server does not serve ${apiVersion} ${kind}`);
    return state;
  }

  function sendEvent(watcher: Watcher, type: string, object: KubeObject): void {
    watcher.response.write(`${JSON.stringify({ type, object })}\n`);
  }

  function record(state: ResourceState, type: KubeWatchEventType, object: KubeObject): void {
    const event: StoredEvent = { type, object, resourceVersion };
    state.history.push(event);
    if (state.history.length > historyLimit) {
      const dropped = state.history.splice(0, state.history.length - historyLimit);
      expiredThrough.set(state, dropped[dropped.length - 1]!.resourceVersion - 1);
    }
    for (const watcher of state.watchers) {
      if (watcher.namespace !== undefined && object.metadata?.namespace !== watcher.namespace) continue;
      if (!watcher.selector(object.metadata?.labels)) continue;
      sendEvent(watcher, type, object);
    }
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
    resourceVersion += 1;
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
    record(state, previous ? 'MODIFIED' : 'ADDED', object);
    return structuredClone(object);
  }

  function remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const state = stateFor(apiVersion, kind);
    const key = objectKey(state.type.namespaced ? (namespace ?? 'default') : undefined, name);
    const previous = state.objects.get(key);
    if (!previous) return undefined;
    state.objects.delete(key);
    resourceVersion += 1;
    const object: KubeObject = { ...previous, metadata: { ...previous.metadata, resourceVersion: String(resourceVersion) } };
    record(state, 'DELETED', object);
    return structuredClone(object);
  }

  function closeWatcher(state: ResourceState, watcher: Watcher, abrupt: boolean): void {
    if (watcher.bookmarks) clearInterval(watcher.bookmarks);
    if (watcher.timeout) clearTimeout(watcher.timeout);
    state.watchers.delete(watcher);
    if (abrupt) watcher.response.socket?.destroy();
    else watcher.response.end();
  }

  function send(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
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

  function serveWatch(req: IncomingMessage, res: ServerResponse, state: ResourceState, namespace: string | undefined, query: URLSearchParams): number {
    const fromText = query.get('resourceVersion') ?? '';
    const selector = parseLabelSelector(query.get('labelSelector'));
    const inScope = (object: KubeObject) =>
      (namespace === undefined || object.metadata?.namespace === namespace) && selector(object.metadata?.labels);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The client's fetch resolves on the headers; a quiet watch must not hold them back.
    res.flushHeaders();
    const watcher: Watcher = { response: res, namespace, selector, bookmarks: undefined, timeout: undefined };
    const from = Number(fromText);
    if (fromText !== '' && fromText !== '0' && !Number.isInteger(from)) {
      sendEvent(watcher, 'ERROR', status(400, 'BadRequest', `invalid resource version: ${fromText}`));
      res.end();
      return 200;
    }
    if (fromText === '' || fromText === '0') {
      // No starting point: the current state as synthetic ADDED events, then changes.
      for (const object of state.objects.values()) if (inScope(object)) sendEvent(watcher, 'ADDED', object);
    } else {
      const expired = expiredThrough.get(state) ?? 0;
      if (from <= expired) {
        sendEvent(watcher, 'ERROR', status(410, 'Expired', `too old resource version: ${from} (${expired + 1})`));
        res.end();
        return 200;
      }
      for (const event of state.history) {
        if (event.resourceVersion > from && inScope(event.object)) sendEvent(watcher, event.type, event.object);
      }
    }
    state.watchers.add(watcher);
    if (query.get('allowWatchBookmarks') === 'true') {
      watcher.bookmarks = setInterval(() => {
        sendEvent(watcher, 'BOOKMARK', {
          kind: state.type.kind,
          apiVersion: state.apiVersion,
          metadata: { resourceVersion: String(resourceVersion) },
        });
      }, bookmarkIntervalMs);
    }
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? '0');
    if (timeoutSeconds > 0) watcher.timeout = setTimeout(() => closeWatcher(state, watcher, false), timeoutSeconds * 1000);
    req.once('close', () => closeWatcher(state, watcher, false));
    return 200;
  }

  async function readBody(req: IncomingMessage): Promise<KubeObject> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as KubeObject;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<number> {
    const requestUrl = new URL(req.url ?? '/', url);
    if (req.headers.authorization !== `Bearer ${token}`) {
      send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return 401;
    }
    const target = route(requestUrl.pathname);
    if (!target) {
      send(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${requestUrl.pathname})`));
      return 404;
    }
    const { state, namespace, name } = target;
    const query = requestUrl.searchParams;
    const watch = query.get('watch') === 'true' || query.get('watch') === '1';
    if (req.method === 'GET' && watch && name === undefined) return serveWatch(req, res, state, namespace, query);
    if (req.method === 'GET' && name === undefined) {
      const selector = parseLabelSelector(query.get('labelSelector'));
      const items = [...state.objects.values()].filter(
        (object) => (namespace === undefined || object.metadata?.namespace === namespace) && selector(object.metadata?.labels),
      );
      send(res, 200, {
        kind: `${state.type.kind}List`,
        apiVersion: state.apiVersion,
        metadata: { resourceVersion: String(resourceVersion) },
        items,
      });
      return 200;
    }
    if (req.method === 'GET' && name !== undefined) {
      const object = state.objects.get(objectKey(namespace, name));
      if (!object) {
        send(res, 404, status(404, 'NotFound', `${state.type.plural} "${name}" not found`));
        return 404;
      }
      send(res, 200, object);
      return 200;
    }
    if (req.method === 'POST' && name === undefined) {
      const body = await readBody(req);
      const metadata = { ...body.metadata, ...(namespace !== undefined ? { namespace } : {}) };
      if (state.objects.has(objectKey(state.type.namespaced ? (metadata.namespace ?? 'default') : undefined, metadata.name ?? ''))) {
        send(res, 409, status(409, 'AlreadyExists', `${state.type.plural} "${metadata.name}" already exists`));
        return 409;
      }
      send(res, 201, apply({ ...body, apiVersion: state.apiVersion, kind: state.type.kind, metadata }));
      return 201;
    }
    if (req.method === 'PUT' && name !== undefined) {
      const body = await readBody(req);
      const metadata = { ...body.metadata, name, ...(namespace !== undefined ? { namespace } : {}) };
      send(res, 200, apply({ ...body, apiVersion: state.apiVersion, kind: state.type.kind, metadata }));
      return 200;
    }
    if (req.method === 'DELETE' && name !== undefined) {
      const removed = remove(state.apiVersion, state.type.kind, namespace, name);
      if (!removed) {
        send(res, 404, status(404, 'NotFound', `${state.type.plural} "${name}" not found`));
        return 404;
      }
      send(res, 200, removed);
      return 200;
    }
    send(res, 405, status(405, 'MethodNotAllowed', `${req.method ?? ''} is not supported here`));
    return 405;
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const requestUrl = new URL(req.url ?? '/', url);
    const entry: KubeApiRequest = {
      method: req.method ?? 'GET',
      path: requestUrl.pathname,
      watch: requestUrl.searchParams.get('watch') === 'true',
      resourceVersion: requestUrl.searchParams.get('resourceVersion') ?? undefined,
      status: 0,
    };
    requests.push(entry);
    handle(req, res).then(
      (code) => {
        entry.status = code;
      },
      (error: unknown) => {
        entry.status = 500;
        if (!res.headersSent) send(res, 500, status(500, 'InternalError', String(error)));
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
      // Lists from now on hand out a resourceVersion past the compaction point, so the relist
      // the 410 forces leads to a watch that works.
      resourceVersion += 1;
    },
    dropWatches: (options = {}) => {
      for (const state of resources.values()) for (const watcher of [...state.watchers]) closeWatcher(state, watcher, !options.graceful);
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
