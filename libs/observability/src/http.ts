// One small HTTP server per service: /metrics for Prometheus, /healthz (the process works) and
// /readyz (it is connected and consuming), as Kubernetes probes expect.
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { redactSecrets, string } from '@kappa/config';

/** The option every service has for where its /metrics, /healthz and /readyz listen. */
export const metricsHostOption = string({ description: 'address of /metrics, /healthz and /readyz (127.0.0.1 keeps them on this host)', default: '0.0.0.0' });

export interface HealthChecks {
  /** Liveness: false only when the process should be restarted. */
  healthy(): boolean;
  /** Readiness: connected to what it needs and doing its work. */
  ready(): boolean;
}

export interface ObservabilityServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startObservabilityServer(
  registry: Registry,
  checks: HealthChecks,
  options: { port: number; host?: string },
): Promise<ObservabilityServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          // A label value may quote a URL or an error message: no secret leaves through /metrics.
          res.end(redactSecrets(body));
        },
        (error: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics failed: ${String(error)}\n`);
        },
      );
      return;
    }
    if (path === '/healthz' || path === '/readyz') {
      const ok = path === '/healthz' ? checks.healthy() : checks.ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok\n' : 'not ok\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      const where = `${options.host ?? '0.0.0.0'}:${options.port}`;
      reject(
        error.code === 'EADDRINUSE'
          ? new Error(`the metrics port ${where} is already in use: stop what uses it or set --metrics-port (0 picks a free port)`, { cause: error })
          : error,
      );
    });
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
