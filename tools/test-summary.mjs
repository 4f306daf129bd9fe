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
/** ' (why: …)' from a vitest failure's messages, one line, at most 300 characters. */
function firstLine(messages) {
  const line = String(messages?.[0] ?? '').split('\n').find((l) => l.trim()) ?? '';
  return line ? ` (why: ${line.trim().slice(0, 300)})` : '';
}
const reports = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
console.log('\nkappa test summary');
for (const file of reports) {
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  const project = file.replace(/\.json$/, '');
  const p = report.numPassedTests ?? 0;
  let f = report.numFailedTests ?? 0;
  const s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  for (const suite of report.testResults ?? []) {
    for (const test of suite.assertionResults ?? []) {
      // With the error's first line: CI's log may keep only the summary (seen: a CI failure named
      // with no reason).
      if (test.status === 'failed') failures.push(`${project}: ${test.fullName}${firstLine(test.failureMessages)}`);
    }
    // A file can fail with none of its tests failed: a beforeAll/afterAll hook threw (its tests
    // then show as skipped), or an error escaped a test. It counts as one failure, named with the
    // error's first lines.
    const testFailed = (suite.assertionResults ?? []).some((test) => test.status === 'failed');
    if (suite.status === 'failed' && !testFailed) {
      f++;
      const why = String(suite.message ?? '').split('\n').filter(Boolean).slice(0, 3).join(' | ');
      failures.push(`${project}: ${suite.name} (the file failed outside its tests: ${why})`);
    }
  }
  passed += p;
  failed += f;
  skipped += s;
  console.log(`  ${project.padEnd(28)} ${p} passed, ${f} failed, ${s} skipped`);
}
if (failures.length) {
  console.log('\nFailed:');
  for (const f of failures) console.log(`  - ${f}`);
}
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
