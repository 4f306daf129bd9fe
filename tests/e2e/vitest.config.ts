import { mergeConfig } from 'vitest/config';
import { projectTestConfig } from '../../tools/vitest.shared.js';

// test/cluster-rolling.test.ts runs only as `npm run test:rolling` (KAPPA_TEST_ROLLING=1): it is
// not yet reliable (docs/architecture.md, "Rolling restart of every server").
const rolling = process.env['KAPPA_TEST_ROLLING'] === '1';
export default mergeConfig(projectTestConfig(import.meta.url), {
  test: rolling ? {} : { exclude: ['**/node_modules/**', 'test/cluster-rolling.test.ts'] },
});
