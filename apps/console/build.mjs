// Builds the console: the server into dist/main.js (like every app, tools/build-app.mjs) and the
// web app (React + Cytoscape.js) into dist/web with esbuild, the bundler every kappa app already
// uses; no dev server is needed to ship it.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
execFileSync(process.execPath, [join(here, '../../tools/build-app.mjs')], { cwd: here, stdio: 'inherit' });
const out = join(here, 'dist/web');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src/web/main.tsx')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome120',
  jsx: 'automatic',
  minify: true,
  sourcemap: true,
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});
for (const file of ['index.html', 'app.css']) copyFileSync(join(here, 'src/web', file), join(out, file));
