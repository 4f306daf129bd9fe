// Container health probe for images without curl: exits 0 when the URL answers 2xx within 3 s.
//   node /app/healthcheck.mjs http://127.0.0.1:9405/healthz
const url = process.argv[2] ?? 'http://127.0.0.1:9400/healthz';
try {
  const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
  process.exit(response.ok ? 0 : 1);
} catch {
  process.exit(1);
}
