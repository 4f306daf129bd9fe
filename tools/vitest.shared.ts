// The one test configuration every project uses: real servers are slow to start, so timeouts
// are generous, files run one at a time (BPF and network namespaces are machine-wide), and each
// project writes a JSON report that tools/test-summary.mjs totals into the closing line.
import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export function projectTestConfig(configUrl: string) {
  const projectRoot = dirname(fileURLToPath(configUrl));
  const workspaceRoot = resolve(projectRoot, '../..');
  const name = `${basename(dirname(projectRoot))}-${basename(projectRoot)}`;
  return defineConfig({
    test: {
      root: projectRoot,
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      // 120 s: with two `npm test` runs at once beside other work (load ~30), a capture test that
      // starts and stops two captures took over 60 s.
      testTimeout: 120_000,
      hookTimeout: 120_000,
      fileParallelism: false,
      pool: 'forks',
      passWithNoTests: true,
      reporters: ['default', 'json'],
      outputFile: { json: resolve(workspaceRoot, '.test-results', `${name}.json`) },
    },
  });
}
