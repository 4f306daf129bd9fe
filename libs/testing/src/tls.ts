// TLS material for tests, made by the same tools/make-ca.sh that `npm run up` uses, so a test
// proves the project's own certificates work, not a hand-made set.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const makeCaScript = resolve(dirname(fileURLToPath(import.meta.url)), '../../../tools/make-ca.sh');

export interface TlsMaterial {
  dir: string;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  /** Removes the folder. */
  remove(): void;
}

/**
 * Makes a fresh local CA with a server certificate (localhost, 127.0.0.1, ::1 and `extraSans`,
 * e.g. 'DNS:nats.kappa.svc') and a client certificate, in a new temporary folder.
 */
export function makeTlsMaterial(extraSans: string[] = []): TlsMaterial {
  const dir = mkdtempSync(join(tmpdir(), 'kappa-tls-'));
  execFileSync('bash', [makeCaScript, dir, ...extraSans], { stdio: 'ignore' });
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    serverCertFile: join(dir, 'server.pem'),
    serverKeyFile: join(dir, 'server.key'),
    clientCertFile: join(dir, 'client.pem'),
    clientKeyFile: join(dir, 'client.key'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
