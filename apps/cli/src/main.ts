// `kappa`: the command line of kappa. Dispatches to one subcommand per file in ./commands.
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runObserve } from './commands/observe.js';
import { runStatus } from './commands/status.js';
import { runTags } from './commands/tags.js';
import { runTop } from './commands/top.js';

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, { run: Command; summary: string }> = {
  observe: { run: runObserve, summary: 'print stored and live flows from the exporter\'s Observer (like hubble observe)' },
  status: { run: runStatus, summary: 'health, rate, lag and DLQ count of every stage; exit 0 only when all five are ready' },
  top: { run: runTop, summary: 'top talkers over a range of flow time, by namespace, workload, pod, process, node or ip' },
  tags: { run: runTags, summary: 'look up what the k8s-tagger knows of an IP address or a container id' },
};

function usage(): string {
  const lines = ['Usage: kappa <command> [--flag=value ...]', '', 'Commands:'];
  for (const [name, { summary }] of Object.entries(commands)) lines.push(`  ${name.padEnd(10)}${summary}`);
  lines.push(`  ${'help'.padEnd(10)}print this help`, '', 'Run `kappa <command> --help` for the options of a command.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`kappa: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  return command.run(rest);
}

/**
 * `npm run up` writes .kappa/up.json (its NATS URL and Observer address) at the workspace root;
 * while it runs, the CLI reads it as its config file unless KAPPA_CONFIG says otherwise, so a
 * plain `npx kappa status` finds the local NATS on its non-default port.
 */
function useLocalUpConfig(): void {
  if (process.env.KAPPA_CONFIG) return;
  const candidates = [resolve('.kappa/up.json'), resolve(dirname(fileURLToPath(import.meta.url)), '../../../.kappa/up.json')];
  const found = candidates.find((file) => existsSync(file));
  if (found) process.env.KAPPA_CONFIG = found;
}

// grpc-js sends an IP address target as the TLS server name, which Node flags once per process
// as DEP0123; the certificate is still checked against the IP. The notice is for developers,
// not for someone running `kappa observe --tls-ca …`, so the CLI keeps its stderr for its own words.
process.noDeprecation = true;
useLocalUpConfig();
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`kappa: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
