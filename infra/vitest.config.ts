import { resolve } from 'node:path';
import { projectTestConfig } from '../tools/vitest.shared.js';

// The shared config assumes projects two levels below the workspace root (apps/x, libs/x);
// infra/ is one level down, so its report path is set here.
const shared = projectTestConfig(import.meta.url);
export default {
  ...shared,
  test: { ...shared.test, outputFile: { json: resolve(import.meta.dirname, '..', '.test-results', 'infra.json') } },
};
