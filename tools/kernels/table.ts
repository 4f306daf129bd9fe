// `npm test`'s table of kernels: its VM lane runs `npm run test:kernels -- --host=false` (the host's
// half is the capture project's own tests, which its kernel lane runs on this kernel meanwhile).
// Once both lanes are done, this prints the feature × kernel table of the VM runs with this host's
// column in front, from the capture project's report for the same test files, as `npm run
// test:kernels` prints it with its own host run.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfigOrExit, string } from '@kappa/config';
import { hostRunFromReport, renderReport } from './report.js';
import type { SavedRuns } from './report.js';

const workspace = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const config = loadConfigOrExit({
  command: 'node --import tsx tools/kernels/table.ts',
  summary: "Prints npm run test:kernels' table of saved VM runs (--runs-file) with this host's column from capture's own test report.",
  options: {
    runs: string({ description: 'the runs `npm run test:kernels -- --runs-file` saved' }),
    hostReport: string({ description: "capture's vitest JSON report on this host's kernel", default: join(workspace, '.test-results/apps-capture.json') }),
  },
  required: ['runs'],
});

const saved = JSON.parse(readFileSync(config.runs!, 'utf8')) as SavedRuns;
const check = spawnSync(process.execPath, [join(workspace, 'apps/capture/bin/kappa-capture.js'), '--check'], { encoding: 'utf8' });
const report = existsSync(config.hostReport) ? readFileSync(config.hostReport, 'utf8') : undefined;
const host = hostRunFromReport(`${release()} (host)`, report, saved.tests, `${check.stdout}${check.stderr}`);
process.stdout.write(renderReport([host, ...saved.runs]));
