// Totals the per-project vitest JSON reports (.test-results/*.json) and the lint/typecheck
// outcome into the closing line `N passed, N failed, N skipped`.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = '.test-results';
const checks = process.argv.slice(2); // "name=0" per check (exit codes)
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const check of checks) {
  const [name, code] = check.split('=');
  if (code === '0') passed++;
  else {
    failed++;
    failures.push(`${name} (exit ${code})`);
  }
}
const reports = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
console.log('\nkappa test summary');
for (const file of reports) {
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  const p = report.numPassedTests ?? 0;
  const f = (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0);
  const s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  passed += p;
  failed += f;
  skipped += s;
  console.log(`  ${file.replace(/\.json$/, '').padEnd(28)} ${p} passed, ${f} failed, ${s} skipped`);
  for (const suite of report.testResults ?? []) {
    for (const test of suite.assertionResults ?? []) {
      if (test.status === 'failed') failures.push(`${file.replace(/\.json$/, '')}: ${test.fullName}`);
    }
    if (suite.status === 'failed' && (suite.assertionResults ?? []).length === 0) {
      failures.push(`${file.replace(/\.json$/, '')}: ${suite.name} (did not run: ${String(suite.message).split('\n')[0]})`);
    }
  }
}
if (failures.length) {
  console.log('\nFailed:');
  for (const f of failures) console.log(`  - ${f}`);
}
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
