// The console's HTTP(S) server: the built web app (static files, no data in them) and a JSON API
// over the Observer. Every /api call needs the Observer's bearer token (Authorization: Bearer),
// so the console is behind the same TLS and token as the Observer itself.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { extname, join, normalize } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import type { Metadata, ServiceError, StatusObject } from '@grpc/grpc-js';
import { FlowRecordSchema, GetAggregatesResponseSchema, GetStatusResponseSchema, missingOf, toJson } from '@kappa/contracts';
import type { GetFlowsResponse } from '@kappa/contracts';
import { FilterError, FlagValueError, andFilters, flagsToFilter, parseFilter } from '@kappa/filter';
import type { Logger } from '@kappa/observability';
import type { ObserverClient } from '@kappa/contracts';

export interface ConsoleServerOptions {
  observer: ObserverClient;
  /** Folder of the built web app (index.html, app.js, app.css). */
  webRoot: string;
  host: string;
  port: number;
  /** HTTPS when both are set. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Checks an Authorization header; undefined: the API is open (a warning at start). */
  authorize?: ((header: string | undefined) => boolean) | undefined;
  logger: Logger;
  /** Flows returned by /api/flows at most. */
  maxFlows?: number;
}

const types: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml', '.map': 'application/json' };

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** A bad filter: where it is wrong (0-based) and why. */
    readonly position?: number,
    readonly reason?: string,
  ) {
    super(message);
  }
}

/** since/until query values: unix ns, or a duration back from now (15m), or empty. */
function timeParam(value: string | null, name: string): bigint {
  if (value === null || value === '') return 0n;
  if (/^\d+$/.test(value)) return BigInt(value);
  const m = /^(\d+)(s|m|h|d)$/.exec(value);
  if (m) return (BigInt(Date.now()) - BigInt(Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'])) * 1_000_000n;
  throw new ApiError(400, `${name}: unix nanoseconds or a duration like 15m, not "${value}"`);
}

function intParam(value: string | null, name: string, max: number): number {
  if (value === null || value === '') return 0;
  if (!/^\d+$/.test(value) || Number(value) > max) throw new ApiError(400, `${name}: a whole number up to ${max}`);
  return Number(value);
}

/**
 * The filter is checked here too, so the page can show where it is wrong; the filter bar's
 * verdict (dropped, forwarded) compiles exactly as `kappa observe --verdict` does and is and'ed.
 */
function filterParam(q: URLSearchParams): string {
  const text = q.get('filter') ?? '';
  try {
    parseFilter(text);
  } catch (error) {
    if (error instanceof FilterError) throw new ApiError(400, error.message, error.position, error.reason);
    throw error;
  }
  const verdict = q.get('verdict') ?? '';
  if (verdict === '') return text;
  try {
    return andFilters(text, flagsToFilter({ verdict }));
  } catch (error) {
    if (error instanceof FlagValueError) throw new ApiError(400, `verdict: ${error.message}`);
    throw error;
  }
}

function grpcToHttp(error: unknown): ApiError {
  const e = error as ServiceError;
  if (e?.code === grpcStatus.INVALID_ARGUMENT) return new ApiError(400, e.details);
  if (e?.code === grpcStatus.UNAVAILABLE || e?.code === grpcStatus.DEADLINE_EXCEEDED) return new ApiError(502, `the Observer does not answer: ${e.details}`);
  if (e?.code === grpcStatus.UNAUTHENTICATED || e?.code === grpcStatus.PERMISSION_DENIED) return new ApiError(502, `the Observer refused the console: ${e.details} (check the console's --token-file and TLS settings)`);
  return new ApiError(502, e?.details ?? String(error));
}

const flowJson = (response: GetFlowsResponse) => ({ flow: toJson(FlowRecordSchema, response.flow!), receivedNs: String(response.receivedNs) });

export class ConsoleServer {
  private server: Server | undefined;
  private boundPort = 0;
  private readonly tails = new Set<() => void>();

  constructor(private readonly options: ConsoleServerOptions) {}

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host === '0.0.0.0' ? '127.0.0.1' : this.options.host;
    return `${this.options.certFile ? 'https' : 'http'}://${host}:${this.boundPort}/`;
  }

  async start(): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((error: unknown) => {
        const e = error instanceof ApiError ? error : new ApiError(500, error instanceof Error ? error.message : String(error));
        if (e.status >= 500) this.options.logger.warn({ err: error, url: req.url }, 'console request failed');
        if (res.headersSent) {
          res.end();
          return;
        }
        this.json(res, e.status, { error: e.message, ...(e.position === undefined ? {} : { position: e.position, reason: e.reason }) });
      });
    };
    const { certFile, keyFile } = this.options;
    const server = certFile && keyFile ? createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, handler) : createHttpServer(handler);
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    const address = server.address();
    this.boundPort = typeof address === 'object' && address ? address.port : this.options.port;
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://console');
    // Probes (no data, no token): alive while it serves; ready while the Observer answers.
    if (url.pathname === '/healthz') {
      this.json(res, 200, { ok: true });
      return;
    }
    if (url.pathname === '/readyz') {
      const ready = await this.options.observer.status().then(
        () => true,
        () => false,
      );
      this.json(res, ready ? 200 : 503, { ready });
      return;
    }
    if (url.pathname.startsWith('/api/')) {
      if (this.options.authorize && !this.options.authorize(req.headers.authorization)) {
        this.json(res, 401, { error: 'missing or wrong token: the console takes the Observer\'s bearer token (the file of --token-file)' });
        return;
      }
      await this.api(url, req, res);
      return;
    }
    await this.file(url.pathname, res);
  }

  private async file(pathname: string, res: ServerResponse): Promise<void> {
    const relative = normalize(decodeURIComponent(pathname)).replace(/^(\.\.[/\\])+/, '');
    const path = relative === '/' || extname(relative) === '' ? 'index.html' : relative;
    try {
      const body = await readFile(join(this.options.webRoot, path));
      res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream', 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:" });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  }

  private async api(url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const q = url.searchParams;
    const { observer } = this.options;
    switch (url.pathname) {
      case '/api/map':
      case '/api/top': {
        const top = url.pathname === '/api/top';
        const request = {
          sinceNs: timeParam(q.get('since') ?? '1h', 'since'),
          untilNs: timeParam(q.get('until'), 'until'),
          query: filterParam(q),
          level: q.get('level') ?? 'workload',
          side: top ? (q.get('side') ?? 'pair') : 'pair',
          orderBy: top ? (q.get('by') ?? 'bytes') : 'bytes',
          limit: top ? intParam(q.get('limit') ?? '20', 'limit', 10_000) : 0,
        };
        const { response, missing } = await observer.aggregates(request).catch((error: unknown) => {
          throw grpcToHttp(error);
        });
        this.json(res, 200, { ...(toJson(GetAggregatesResponseSchema, response, { alwaysEmitImplicit: true }) as object), ...(missing ? { missing } : {}) });
        return;
      }
      case '/api/status': {
        const { response, missing } = await observer.status().catch((error: unknown) => {
          throw grpcToHttp(error);
        });
        this.json(res, 200, { ...(toJson(GetStatusResponseSchema, response, { alwaysEmitImplicit: true }) as object), ...(missing ? { missing } : {}) });
        return;
      }
      case '/api/flows': {
        const max = this.options.maxFlows ?? 5000;
        const last = intParam(q.get('last'), 'last', max);
        const flows: unknown[] = [];
        let missing: string | undefined;
        await new Promise<void>((resolve, reject) => {
          const stream = observer.flows({
            sinceNs: timeParam(q.get('since') ?? '1h', 'since'),
            untilNs: timeParam(q.get('until'), 'until'),
            query: filterParam(q),
            last: last > 0 ? last : max,
          });
          stream.on('data', (response: GetFlowsResponse) => {
            if (response.flow) flows.push(flowJson(response));
          });
          stream.on('error', (error) => reject(grpcToHttp(error)));
          // The trailers (replicas that did not answer) come with the status, after the end.
          stream.on('status', (status: StatusObject) => {
            missing = missingOf(status.metadata);
            if (status.code === grpcStatus.OK) resolve();
          });
        });
        this.json(res, 200, { flows, ...(missing ? { missing } : {}) });
        return;
      }
      case '/api/tail': {
        // Newline-delimited JSON, one flow per line, until the page goes away.
        const stream = observer.flows({ sinceNs: BigInt(Date.now()) * 1_000_000n, query: filterParam(q), follow: true });
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
        // The first line (empty) says the Observer has subscribed this tail: every flow it
        // receives from now on follows. Then, when exporter replicas could not be followed, a
        // line {"missing": "..."} naming them.
        stream.once('metadata', (metadata: Metadata) => {
          res.write('\n');
          const missing = missingOf(metadata);
          if (missing) res.write(`${JSON.stringify({ missing })}\n`);
        });
        const stop = () => stream.cancel();
        this.tails.add(stop);
        req.on('close', stop);
        await new Promise<void>((resolve) => {
          stream.on('data', (response: GetFlowsResponse) => {
            if (response.flow) res.write(`${JSON.stringify(flowJson(response))}\n`);
          });
          stream.on('error', (error: ServiceError) => {
            if (error.code !== grpcStatus.CANCELLED) res.write(`${JSON.stringify({ error: error.details })}\n`);
            resolve();
          });
          stream.on('end', () => resolve());
        });
        this.tails.delete(stop);
        res.end();
        return;
      }
      default:
        throw new ApiError(404, `no such API: ${url.pathname}`);
    }
  }

  async close(): Promise<void> {
    for (const stop of this.tails) stop();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
