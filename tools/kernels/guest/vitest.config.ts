// Tests that run only inside the test VM (tools/kernels/run.ts lists them after capture's own):
// they change the guest kernel (lockdown), which no test may do to the host.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: dirname(fileURLToPath(import.meta.url)),
    include: ['*.test.ts'],
    testTimeout: 60_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
