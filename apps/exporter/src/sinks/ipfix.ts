// The IPFIX sink: encodes each batch and sends it to one collector over UDP or TCP.
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { IpfixEncoder } from '../ipfix/encoder.js';
import type { IpfixMessage } from '../ipfix/encoder.js';
import { TcpTransport, UdpTransport, parseCollector } from '../ipfix/transport.js';
import type { IpfixTransport } from '../ipfix/transport.js';
import type { ExportBatch, FlowSink } from './sink.js';

export interface IpfixSinkOptions {
  collector: URL;
  enterpriseNumber: number;
  templateRefreshMs: number;
  /** UDP: largest datagram payload (path MTU minus IP and UDP headers). */
  udpMaxMessageBytes: number;
  maxStringBytes: number;
  /** Observation domain id = cluster id + this (IpfixEncoderOptions.domainOffset). */
  domainOffset?: number;
  logger: Logger;
  registry: Registry;
}

export class IpfixSink implements FlowSink {
  readonly name = 'ipfix';
  readonly encoder: IpfixEncoder;
  private readonly transport: IpfixTransport & { start(): Promise<void> };
  private readonly messages: Counter<'collector'>;
  private readonly records: Counter<'collector'>;
  private readonly templates: Counter<'collector'>;
  private readonly label: string;
  private templateSendCount = 0;

  constructor(options: IpfixSinkOptions) {
    const { protocol, host, port } = parseCollector(options.collector);
    this.label = `${protocol}://${host}:${port}`;
    this.encoder = new IpfixEncoder({
      enterpriseNumber: options.enterpriseNumber,
      maxMessageBytes: protocol === 'udp' ? options.udpMaxMessageBytes : 65535,
      maxStringBytes: options.maxStringBytes,
      domainOffset: options.domainOffset ?? 0,
    });
    const metric = (name: string, help: string) =>
      new Counter<'collector'>({ name, help, labelNames: ['collector'], registers: [options.registry] });
    this.messages = metric('kappa_exporter_ipfix_messages_total', 'IPFIX messages sent');
    this.records = metric('kappa_exporter_ipfix_records_total', 'IPFIX data records sent');
    this.templates = metric('kappa_exporter_ipfix_template_sends_total', 'Times the templates were sent (refresh or TCP connect)');
    const transportOptions = {
      host,
      port,
      encoder: this.encoder,
      logger: options.logger,
      templateRefreshMs: options.templateRefreshMs,
      onTemplatesSent: () => {
        this.templateSendCount++;
        this.templates.inc({ collector: this.label });
      },
    };
    this.transport = protocol === 'udp' ? new UdpTransport(transportOptions) : new TcpTransport(transportOptions);
  }

  /** Times the templates went out (UDP refreshes, TCP connects). */
  templateSends(): number {
    return this.templateSendCount;
  }

  async start(): Promise<void> {
    await this.transport.start();
  }

  async write(batch: ExportBatch): Promise<void> {
    const view = batch.view;
    const records = view.length;
    if (records === 0) return;
    // Connected first: a (re)connection restarts the sequence numbers the encoder writes.
    await this.transport.ready();
    const messages: IpfixMessage[] = [];
    // A domain (cluster id + offset) seen for the first time gets its templates before its first data.
    for (const domain of this.encoder.domainsOf(view)) {
      if (this.encoder.isNewDomain(domain)) messages.push(...this.encoder.templateMessages(domain));
    }
    messages.push(...this.encoder.encode(view));
    await this.transport.send(messages);
    this.messages.inc({ collector: this.label }, messages.length);
    this.records.inc({ collector: this.label }, records);
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}
