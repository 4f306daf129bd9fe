// TLS, mutual TLS and bearer tokens for kappa's gRPC links (KubeTags, Observer) on both sides, so
// both servers refuse the same way and the CLI speaks to either with the same four settings.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { Metadata, ServerCredentials, ServerInterceptingCall, credentials, status } from '@grpc/grpc-js';
import type { ChannelCredentials, ServerInterceptor } from '@grpc/grpc-js';

/** A server's TLS and token settings; every field is a file path, all optional. */
export interface GrpcServerSecurity {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Set: clients must present a certificate signed by this CA (mutual TLS). */
  clientCaFile?: string | undefined;
  /** Set: every call needs `authorization: Bearer <the file's content>`. */
  tokenFile?: string | undefined;
}

/** The settings cannot be used as given (a missing file, a certificate without its key). */
export class GrpcSecurityError extends Error {
  override readonly name = 'GrpcSecurityError';
}

/** Reads a token file: trimmed; an empty one is an error, never "no token". */
function readToken(file: string, flag: string): Buffer {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (cause) {
    throw new GrpcSecurityError(`cannot read ${flag} ${file}: ${(cause as Error).message}`, { cause });
  }
  if (text.length === 0) throw new GrpcSecurityError(`${flag} ${file} is empty`);
  return createHash('sha256').update(text).digest();
}

/**
 * The expected token, re-read when the file changes (a rotated Kubernetes Secret swaps the file
 * under its symlink), checked at most once a second. An unreadable or empty file after start
 * keeps the last good token, so a rotation in progress never opens the door.
 */
class TokenFile {
  private digest: Buffer;
  private stamp: string;
  private checkedAt = 0;

  constructor(
    private readonly file: string,
    private readonly flag: string,
  ) {
    this.digest = readToken(file, flag);
    this.stamp = this.statStamp() ?? '';
  }

  private statStamp(): string | undefined {
    try {
      const s = statSync(this.file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return undefined;
    }
  }

  private current(): Buffer {
    const now = Date.now();
    if (now - this.checkedAt >= 1000) {
      this.checkedAt = now;
      const stamp = this.statStamp();
      if (stamp !== undefined && stamp !== this.stamp) {
        try {
          this.digest = readToken(this.file, this.flag);
          this.stamp = stamp;
        } catch {
          // keep the last good token
        }
      }
    }
    return this.digest;
  }

  /** Compares digests of equal length in constant time; the token itself is never kept or logged. */
  matches(header: string | undefined): boolean {
    const match = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!match?.[1]) return false;
    return timingSafeEqual(createHash('sha256').update(match[1]).digest(), this.current());
  }
}

/**
 * A bearer-token check for another server of the same link (the console's HTTPS API takes the
 * Observer's token): `authorization` header value in, constant-time match out, the file re-read
 * when it changes. Throws GrpcSecurityError when the file cannot be read at start.
 */
export function bearerTokenCheck(file: string, flag: string): (authorization: string | undefined) => boolean {
  const token = new TokenFile(file, flag);
  return (header) => token.matches(header);
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (cause) {
    throw new GrpcSecurityError(`cannot read ${flag} ${file}: ${(cause as Error).message}`, { cause });
  }
}

export interface SecuredGrpcServer {
  credentials: ServerCredentials;
  /** Pass to `new Server({ interceptors })`: refuses calls without the right bearer token. */
  interceptors: ServerInterceptor[];
  /** What the link lacks, for ONE warning at start; undefined when it is TLS and authenticated. */
  warning: string | undefined;
}

/**
 * Credentials and interceptors for a gRPC server from its settings. `service` names it in the
 * warning (e.g. "KubeTags gRPC"), `prefix` names its flags (--<prefix>-tls-cert ...).
 */
export function grpcServerSecurity(settings: GrpcServerSecurity, service: string, prefix: string): SecuredGrpcServer {
  const flag = (name: string) => `--${prefix}-${name}`;
  if ((settings.certFile === undefined) !== (settings.keyFile === undefined)) {
    throw new GrpcSecurityError(`${flag('tls-cert')} and ${flag('tls-key')} go together: set both or neither`);
  }
  if (settings.clientCaFile !== undefined && settings.certFile === undefined) {
    throw new GrpcSecurityError(`${flag('tls-client-ca')} needs ${flag('tls-cert')} and ${flag('tls-key')} (mutual TLS runs over TLS)`);
  }
  const tls = settings.certFile !== undefined && settings.keyFile !== undefined;
  const serverCredentials = tls
    ? ServerCredentials.createSsl(
        settings.clientCaFile !== undefined ? readPem(settings.clientCaFile, flag('tls-client-ca')) : null,
        [{ cert_chain: readPem(settings.certFile!, flag('tls-cert')), private_key: readPem(settings.keyFile!, flag('tls-key')) }],
        settings.clientCaFile !== undefined,
      )
    : ServerCredentials.createInsecure();

  const interceptors: ServerInterceptor[] = [];
  if (settings.tokenFile !== undefined) {
    const token = new TokenFile(settings.tokenFile, flag('token-file'));
    interceptors.push((_method, call) =>
      new ServerInterceptingCall(call, {
        start: (next) => {
          next({
            onReceiveMetadata: (metadata, pass) => {
              const header = metadata.get('authorization')[0];
              if (token.matches(typeof header === 'string' ? header : undefined)) pass(metadata);
              else call.sendStatus({ code: status.UNAUTHENTICATED, details: 'missing or wrong bearer token (send authorization: Bearer <token>)' });
            },
          });
        },
      }),
    );
  }

  const authenticated = settings.clientCaFile !== undefined || settings.tokenFile !== undefined;
  const lacks: string[] = [];
  if (!tls) lacks.push(`plaintext (set ${flag('tls-cert')} and ${flag('tls-key')})`);
  if (!authenticated) lacks.push(`unauthenticated (set ${flag('tls-client-ca')} for mutual TLS and/or ${flag('token-file')})`);
  const warning = lacks.length > 0 ? `${service} is ${lacks.join(' and ')}: anyone who reaches the port can read it` : undefined;
  return { credentials: serverCredentials, interceptors, warning };
}

/** A client's settings (the CLI's --tls-ca, --tls-cert, --tls-key, --token-file). */
export interface GrpcClientSecurity {
  caFile?: string | undefined;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  tokenFile?: string | undefined;
}

export interface SecuredGrpcClient {
  credentials: ChannelCredentials;
  /** Metadata for every call: the bearer token when one is set (works over plaintext too). */
  metadata(): Metadata;
}

/** TLS when any of caFile, certFile, keyFile is set; a token goes in each call's metadata. */
export function grpcClientSecurity(settings: GrpcClientSecurity): SecuredGrpcClient {
  if ((settings.certFile === undefined) !== (settings.keyFile === undefined)) {
    throw new GrpcSecurityError('--tls-cert and --tls-key go together: set both or neither');
  }
  const tls = settings.caFile !== undefined || settings.certFile !== undefined;
  const channel = tls
    ? credentials.createSsl(
        settings.caFile !== undefined ? readPem(settings.caFile, '--tls-ca') : null,
        settings.keyFile !== undefined ? readPem(settings.keyFile, '--tls-key') : null,
        settings.certFile !== undefined ? readPem(settings.certFile, '--tls-cert') : null,
      )
    : credentials.createInsecure();
  let token: string | undefined;
  if (settings.tokenFile !== undefined) {
    try {
      token = readFileSync(settings.tokenFile, 'utf8').trim();
    } catch (cause) {
      throw new GrpcSecurityError(`cannot read --token-file ${settings.tokenFile}: ${(cause as Error).message}`, { cause });
    }
  }
  return {
    credentials: channel,
    metadata: () => {
      const metadata = new Metadata();
      if (token) metadata.set('authorization', `Bearer ${token}`);
      return metadata;
    },
  };
}
