// Bundles one app (the current folder) into dist/main.js with esbuild: the workspace libraries
// are compiled in, npm packages stay external and load from node_modules at run time.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const workspaceRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const rootPackage = JSON.parse(readFileSync(join(workspaceRoot, 'package.json'), 'utf8'));
const external = Object.keys({ ...rootPackage.dependencies, ...rootPackage.devDependencies });

await build({
  entryPoints: ['src/main.ts'],
  outfile: 'dist/main.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  sourcemap: true,
  external,
  logLevel: 'warning',
  // Bundled CommonJS inside ESM still needs require() for node built-ins.
  banner: { js: "import { createRequire as __kappaRequire } from 'node:module'; const require = __kappaRequire(import.meta.url);" },
});
