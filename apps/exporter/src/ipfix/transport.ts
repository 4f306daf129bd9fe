// Sends IPFIX messages to a collector over UDP (templates refreshed on a timer) or TCP (templates
// sent on every (re)connect, as RFC 7011 §8 asks of a reliable transport).
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { connect } from 'node:net';
import type { Socket as TcpSocket } from 'node:net';
import type { Logger } from '@kappa/observability';
import { IpfixCollectorError } from '../errors.js';
import type { IpfixEncoder, IpfixMessage } from './encoder.js';

export interface IpfixTransport {
  readonly protocol: 'udp' | 'tcp';
  /** Resolves once messages can be sent (TCP: connected, templates sent); rejects with IpfixCollectorError. */
  ready(): Promise<void>;
  /** Sends messages in order; resolves once the kernel took them, rejects with IpfixCollectorError. */
  send(messages: readonly IpfixMessage[]): Promise<void>;
  close(): Promise<void>;
}

export interface TransportOptions {
  host: string;
  port: number;
  encoder: IpfixEncoder;
  logger: Logger;
  /** UDP: how often templates are resent (RFC 7011 §8.4). */
  templateRefreshMs: number;
  /** TCP: how long a send waits for a connection before failing the batch. */
  connectTimeoutMs?: number;
  onTemplatesSent?: (domains: number) => void;
}

/** Parses udp://host:port or tcp://host:port. */
export function parseCollector(url: URL): { protocol: 'udp' | 'tcp'; host: string; port: number } {
  const protocol = url.protocol.replace(/:$/, '');
  if (protocol !== 'udp' && protocol !== 'tcp') throw new Error(`IPFIX collector must be udp:// or tcp://, not ${url.href}`);
  const port = Number(url.port || 4739);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { protocol, host, port };
}

export class UdpTransport implements IpfixTransport {
  readonly protocol = 'udp';
  private socket: UdpSocket | undefined;
  private address: { address: string; family: number } | undefined;
  private refresh: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: TransportOptions) {}

  async start(): Promise<void> {
    try {
      this.address = await lookup(this.options.host);
    } catch (cause) {
      throw new IpfixCollectorError(`udp://${this.options.host}:${this.options.port}`, 'cannot resolve the host', { cause });
    }
    this.socket = createSocket(this.address.family === 6 ? 'udp6' : 'udp4');
    // A collector that is down makes the kernel report ICMP errors on later sends; the datagrams
    // are gone either way (UDP), and templates are refreshed, so they are logged, not fatal.
    this.socket.on('error', (error) => this.options.logger.warn({ err: error }, 'IPFIX UDP socket error'));
    this.refresh = setInterval(() => {
      this.sendTemplates().catch((error: unknown) => this.options.logger.warn({ err: error }, 'IPFIX template refresh failed'));
    }, this.options.templateRefreshMs);
    this.refresh.unref();
  }

  private datagram(bytes: Buffer): Promise<void> {
    const socket = this.socket;
    const address = this.address;
    if (!socket || !address || this.closed) return Promise.reject(new IpfixCollectorError(`udp://${this.options.host}:${this.options.port}`, 'the exporter is closed'));
    return new Promise((resolve, reject) => {
      socket.send(bytes, this.options.port, address.address, (error) => {
        if (error) reject(new IpfixCollectorError(`udp://${this.options.host}:${this.options.port}`, 'send failed', { cause: error }));
        else resolve();
      });
    });
  }

  /** Resends the templates of every known domain (also when none is known yet: domain 0). */
  async sendTemplates(): Promise<void> {
    const encoder = this.options.encoder;
    const domains = encoder.domains.length > 0 ? encoder.domains : [];
    for (const domain of domains) for (const m of encoder.templateMessages(domain)) await this.datagram(m.bytes);
    this.options.onTemplatesSent?.(domains.length);
  }

  async ready(): Promise<void> {
    if (this.closed) throw new IpfixCollectorError(`udp://${this.options.host}:${this.options.port}`, 'the exporter is closed');
  }

  async send(messages: readonly IpfixMessage[]): Promise<void> {
    // Queued at once: the socket keeps their order, and one await per datagram would cost a
    // round trip through the event loop each (2.2x slower for 1000-record batches).
    await Promise.all(messages.map((m) => this.datagram(m.bytes)));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.refresh) clearInterval(this.refresh);
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}

export class TcpTransport implements IpfixTransport {
  readonly protocol = 'tcp';
  private socket: TcpSocket | undefined;
  private connecting: Promise<TcpSocket> | undefined;
  private closed = false;

  constructor(private readonly options: TransportOptions) {}

  private get collector(): string {
    return `tcp://${this.options.host}:${this.options.port}`;
  }

  async start(): Promise<void> {
    // Connect in the background; the first send waits for it.
    this.connection().catch(() => undefined);
  }

  /** The live connection, connecting (and sending templates first) when there is none. */
  private connection(): Promise<TcpSocket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    const attempt = new Promise<TcpSocket>((resolve, reject) => {
      const socket = connect({ host: this.options.host, port: this.options.port });
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 10_000);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new IpfixCollectorError(this.collector, 'connect timed out'));
      }, this.options.connectTimeoutMs ?? 5000);
      socket.once('connect', () => {
        clearTimeout(timer);
        // A new transport session: sequence numbers restart and every domain gets its templates.
        this.options.encoder.resetSession();
        for (const domain of this.options.encoder.domains) {
          for (const m of this.options.encoder.templateMessages(domain)) socket.write(m.bytes);
        }
        this.options.onTemplatesSent?.(this.options.encoder.domains.length);
        this.options.logger.info({ collector: this.collector }, 'IPFIX collector connected; templates sent');
        resolve(socket);
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new IpfixCollectorError(this.collector, 'connection failed', { cause: error }));
      });
      socket.once('close', () => {
        if (this.socket === socket) this.socket = undefined;
      });
      // A collector never sends anything on an IPFIX session; reading keeps 'close' timely.
      socket.on('data', () => undefined);
    });
    this.connecting = attempt;
    attempt.then(
      (socket) => {
        this.socket = socket;
        this.connecting = undefined;
      },
      (error: unknown) => {
        this.connecting = undefined;
        // The batch that needed the connection is redelivered (after the consumer's retry delay),
        // and that delivery tries again: the bus paces the reconnects.
        this.options.logger.warn({ err: error }, 'IPFIX collector unreachable; the batch will be redelivered');
      },
    );
    return attempt;
  }

  async ready(): Promise<void> {
    if (this.closed) throw new IpfixCollectorError(this.collector, 'the exporter is closed');
    await this.connection();
  }

  async send(messages: readonly IpfixMessage[]): Promise<void> {
    if (this.closed) throw new IpfixCollectorError(this.collector, 'the exporter is closed');
    const socket = await this.connection();
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error | null) => {
        socket.off('close', onClose);
        if (error) reject(new IpfixCollectorError(this.collector, 'write failed', { cause: error }));
        else resolve();
      };
      const onClose = () => done(new Error('connection closed while writing'));
      socket.once('close', onClose);
      for (const m of messages) socket.write(m.bytes);
      // The callback of the last write fires once everything before it is handed to the kernel.
      socket.write(Buffer.alloc(0), (error) => done(error));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const socket = this.socket;
    this.socket = undefined;
    if (socket && !socket.destroyed) await new Promise<void>((resolve) => socket.end(() => resolve()));
  }
}
