// List-then-watch of one resource, as client-go's reflector does it, feeding the index without
// keeping copies of the objects: lists page (limit/continue) over a consistent snapshot, a
// relist removes what disappeared and replaces a pod recreated under the same name, a watch
// resumes from its last resourceVersion (bookmarks keep it fresh), 410 Gone relists, and
// 429/5xx wait as the server asks (Retry-After) or back off. Lists are plain HTTPS GETs with the
// kubeconfig's credentials; watches use client-node's Watch.
import { request as httpRequest } from 'node:http';
import type { IncomingMessage, RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Watch } from '@kubernetes/client-node';
import type { Logger } from '@kappa/observability';

/** An answer of the API server other than 200 (its Status reason and Retry-After kept). */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
  }
}

export interface ReflectorHooks {
  /** The list or watch failed; the next attempt is in delayMs. */
  onRestart?(resource: string, delayMs: number, error: unknown): void;
  /** A relist began (first list included). */
  onList?(resource: string): void;
}

export interface ReflectorOptions {
  kubeConfig: KubeConfig;
  /** e.g. "pods" (for logs and metrics). */
  resource: string;
  /** e.g. /api/v1/pods */
  path: string;
  upsert(object: KubernetesObject): void;
  remove(object: KubernetesObject): void;
  logger: Logger;
  hooks?: ReflectorHooks;
  /** Items per list page. Default 500, as client-go. */
  pageSize?: number;
  /** First retry delay after a failure; doubles up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Longest watch before the tagger ends it itself and resumes (server side ends it too). */
  watchTimeoutSeconds?: number;
}

interface ObjectList {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: KubernetesObject[];
}

function keyOf(object: KubernetesObject): string {
  return `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

export class Reflector {
  /** namespace/name → uid of what the index holds, to find deletions on a relist. */
  private readonly known = new Map<string, string>();
  private resourceVersion = '';
  private attempts = 0;
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;
  private watchRequest: AbortController | undefined;
  private listedOnce = false;
  private resolveSynced!: () => void;
  /** Resolves once the first full list has been applied. */
  readonly synced: Promise<void>;

  constructor(private readonly options: ReflectorOptions) {
    this.synced = new Promise((resolve) => (this.resolveSynced = resolve));
  }

  get hasSynced(): boolean {
    return this.listedOnce;
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.watchRequest?.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    const { logger, resource, hooks } = this.options;
    while (!this.stopping.signal.aborted) {
      try {
        if (this.resourceVersion === '') await this.list();
        await this.watch();
        this.attempts = 0;
      } catch (error) {
        if (this.stopping.signal.aborted) break;
        if (error instanceof KubeApiError && error.statusCode === 410) {
          // History compacted past our resourceVersion: relist now.
          this.resourceVersion = '';
          continue;
        }
        if ((error as { name?: string }).name === 'TimeoutError') {
          // The watch was quiet longer than the client's inactivity timeout: resume at once.
          continue;
        }
        const backoff = Math.min(this.options.maxBackoffMs ?? 30_000, (this.options.baseBackoffMs ?? 250) * 2 ** this.attempts);
        const delayMs = error instanceof KubeApiError && error.retryAfterMs !== undefined ? Math.max(error.retryAfterMs, 100) : backoff;
        this.attempts += 1;
        const level = error instanceof KubeApiError && error.statusCode === 403 ? 'error' : 'warn';
        logger[level]({ resource, delayMs, err: error }, error instanceof KubeApiError && error.statusCode === 403
          ? `the API server refuses to list or watch ${resource}: grant the tagger's service account get/list/watch on it (infra/k8s/base/tagger-rbac.yaml)`
          : `${resource}: list or watch failed; retrying`);
        hooks?.onRestart?.(resource, delayMs, error);
        await sleep(delayMs, this.stopping.signal);
      }
    }
  }

  /** A full, paged list: applies every item, then removes what the list no longer holds. */
  private async list(): Promise<void> {
    const { resource, hooks, upsert, remove } = this.options;
    hooks?.onList?.(resource);
    const seen = new Map<string, string>();
    let continueToken: string | undefined;
    let resourceVersion = '';
    do {
      const query = new URLSearchParams({ limit: String(this.options.pageSize ?? 500) });
      if (continueToken) query.set('continue', continueToken);
      let page: ObjectList;
      try {
        page = (await this.get(`${this.options.path}?${query}`)) as ObjectList;
      } catch (error) {
        // An expired continue token: start the list over (what was applied stays applied).
        if (error instanceof KubeApiError && error.statusCode === 410 && continueToken) {
          continueToken = undefined;
          seen.clear();
          continue;
        }
        throw error;
      }
      for (const object of page.items ?? []) {
        const key = keyOf(object);
        const uid = object.metadata?.uid ?? key;
        const previousUid = this.known.get(key);
        // Recreated under the same name while we did not watch: the old one is gone.
        if (previousUid !== undefined && previousUid !== uid) remove({ ...object, metadata: { ...object.metadata, uid: previousUid } });
        upsert(object);
        seen.set(key, uid);
      }
      continueToken = page.metadata?.continue || undefined;
      resourceVersion = page.metadata?.resourceVersion ?? '';
    } while (continueToken);
    for (const [key, uid] of this.known) {
      if (seen.has(key)) continue;
      const slash = key.indexOf('/');
      const namespace = key.slice(0, slash);
      remove({ metadata: { name: key.slice(slash + 1), uid, ...(namespace ? { namespace } : {}) } });
    }
    this.known.clear();
    for (const [key, uid] of seen) this.known.set(key, uid);
    this.resourceVersion = resourceVersion;
    if (!this.listedOnce) {
      this.listedOnce = true;
      this.options.logger.info({ resource, objects: seen.size }, 'listed');
      this.resolveSynced();
    }
  }

  /** One watch from the current resourceVersion; resolves when the server ends it cleanly. */
  private async watch(): Promise<void> {
    const { upsert, remove, path } = this.options;
    let expired = false;
    const ended = new Promise<void>((resolve, reject) => {
      const done = (error: unknown) => {
        this.watchRequest = undefined;
        if (expired) reject(new KubeApiError(410, 'Expired', 'watch resourceVersion expired', undefined));
        else if (error && !this.stopping.signal.aborted) {
          const statusCode = (error as { statusCode?: number }).statusCode;
          reject(statusCode !== undefined ? new KubeApiError(statusCode, 'WatchFailed', (error as Error).message, undefined) : error);
        } else resolve();
      };
      const onEvent = (type: string, object: KubernetesObject & { code?: number }) => {
        if (type === 'ERROR') {
          if (object.code === 410) expired = true;
          return;
        }
        const rv = object.metadata?.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED') {
          const key = keyOf(object);
          const uid = object.metadata?.uid ?? key;
          const previousUid = this.known.get(key);
          if (previousUid !== undefined && previousUid !== uid) remove({ ...object, metadata: { ...object.metadata, uid: previousUid } });
          upsert(object);
          this.known.set(key, uid);
        } else if (type === 'DELETED') {
          remove(object);
          this.known.delete(keyOf(object));
        }
        if (rv) this.resourceVersion = rv;
        this.attempts = 0;
      };
      const timeoutSeconds = this.options.watchTimeoutSeconds ?? Math.round(300 + Math.random() * 300);
      new Watch(this.options.kubeConfig)
        .watch(path, { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds }, onEvent, done)
        .then((request) => {
          this.watchRequest = request;
          if (this.stopping.signal.aborted) request.abort();
        }, reject);
    });
    await ended;
  }

  /** GET as JSON with the kubeconfig's server, CA and credentials. */
  private async get(pathAndQuery: string): Promise<unknown> {
    const cluster = this.options.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/$/, '') + pathAndQuery);
    const options: RequestOptions & { headers: Record<string, string> } = { method: 'GET', headers: { accept: 'application/json' } };
    await this.options.kubeConfig.applyToHTTPSOptions(options as never);
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    let cancel: (() => void) | undefined;
    const text = await new Promise<{ response: IncomingMessage; text: string }>((resolve, reject) => {
      const req = send(url, options, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ response, text: Buffer.concat(chunks).toString('utf8') }));
        response.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(60_000, () => req.destroy(new Error(`no answer from ${url.host} in 60 s`)));
      cancel = () => req.destroy(new Error('stopped'));
      this.stopping.signal.addEventListener('abort', cancel, { once: true });
      req.end();
    }).finally(() => {
      if (cancel) this.stopping.signal.removeEventListener('abort', cancel);
    });
    const response = text.response;
    if (response.statusCode !== 200) {
      let status: { reason?: string; message?: string; details?: { retryAfterSeconds?: number } } = {};
      try {
        status = JSON.parse(text.text) as typeof status;
      } catch {
        // Not a Status object (a proxy's page): the code says enough.
      }
      const header = Number(response.headers['retry-after']);
      const retryAfterSeconds = Number.isFinite(header) && header > 0 ? header : status.details?.retryAfterSeconds;
      throw new KubeApiError(
        response.statusCode ?? 0,
        status.reason ?? 'Unknown',
        `GET ${url.pathname}: ${response.statusCode} ${status.reason ?? ''} ${status.message ?? ''}`.trim(),
        retryAfterSeconds !== undefined && (response.statusCode === 429 || response.statusCode === 503 || response.statusCode === 504) ? retryAfterSeconds * 1000 : undefined,
      );
    }
    return JSON.parse(text.text) as unknown;
  }
}
