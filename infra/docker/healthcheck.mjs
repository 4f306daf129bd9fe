// Container health probe for images without curl: exits 0 when the service's /healthz (or the
// given path or URL) answers 2xx within 3 s. The port is the service's KAPPA_METRICS_PORT.
//   node /app/healthcheck.mjs /healthz      node /app/healthcheck.mjs http://127.0.0.1:9405/readyz
const target = process.argv[2] ?? '/healthz';
const url = target.startsWith('http') ? target : `http://127.0.0.1:${process.env.KAPPA_METRICS_PORT ?? '9400'}${target}`;
try {
  const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
  process.exit(response.ok ? 0 : 1);
} catch {
  process.exit(1);
}
