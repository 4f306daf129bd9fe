// The Observer's gRPC client for `kappa observe` and `kappa top`: the address, TLS and token
// options they share, and connecting with a message that says what to check.
import { Client } from '@grpc/grpc-js';
import type { Metadata } from '@grpc/grpc-js';
import { duration, string } from '@kappa/config';
import { GrpcSecurityError, grpcClientSecurity, missingOf } from '@kappa/contracts';
import type { SecuredGrpcClient } from '@kappa/contracts';

export const connectionOptions = {
  server: string({ description: 'the exporter\'s Observer, host:port (also KAPPA_OBSERVER)', default: '127.0.0.1:9481' }),
  connectTimeout: duration({ description: 'how long to wait for the Observer', default: '5s' }),
  // Also read from .kappa/up.json (keys tlsCa, tlsCert, tlsKey, tokenFile) while `npm run up` runs.
  tlsCa: string({ description: 'CA file that signed the Observer\'s certificate: speak TLS' }),
  tlsCert: string({ description: 'client certificate file, for an Observer that requires mutual TLS (with --tls-key)' }),
  tlsKey: string({ description: 'client key file for --tls-cert' }),
  tokenFile: string({ description: 'file holding the Observer\'s bearer token (--observer-token-file of the exporter)' }),
};

export interface ConnectionConfig {
  server: string;
  connectTimeout: number;
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tokenFile?: string | undefined;
}

/** KAPPA_OBSERVER is the server's variable too. */
export function observerEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (env.KAPPA_SERVER === undefined && env.KAPPA_OBSERVER !== undefined) env.KAPPA_SERVER = env.KAPPA_OBSERVER;
  return env;
}

/** A connected client, or an exit code after printing why not (2 bad settings, 1 unreachable). */
export async function connectObserver(command: string, config: ConnectionConfig): Promise<{ client: Client; security: SecuredGrpcClient } | number> {
  let security;
  try {
    security = grpcClientSecurity({ caFile: config.tlsCa, certFile: config.tlsCert, keyFile: config.tlsKey, tokenFile: config.tokenFile });
  } catch (error) {
    if (!(error instanceof GrpcSecurityError)) throw error;
    process.stderr.write(`${command}: ${error.message}\n`);
    return 2;
  }
  const client = new Client(config.server, security.credentials);
  try {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + config.connectTimeout, (error) => (error ? reject(error) : resolve()));
    });
  } catch {
    process.stderr.write(`${command}: cannot reach the Observer at ${config.server} (is the exporter running with --observer? set --server or KAPPA_OBSERVER; a TLS Observer needs --tls-ca, one with mutual TLS also --tls-cert and --tls-key)\n`);
    client.close();
    return 1;
  }
  return { client, security };
}

/** An exporter replica that did not answer a relayed call leaves its flows out: say so, once. */
export function missingWarner(command: string): (metadata: Metadata) => void {
  let said = false;
  return (metadata) => {
    const missing = missingOf(metadata);
    if (said || missing === undefined) return;
    said = true;
    process.stderr.write(`${command}: warning: the answer lacks the flows of exporter replicas that did not answer: ${missing}\n`);
  };
}
