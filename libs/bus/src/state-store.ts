// A small keyed store on JetStream for state a stage must find again after a restart (the
// tagger's knowledge of deleted pods): one stream, one subject per key, the last value per key
// kept (max_msgs_per_subject 1), values older than maxAge dropped by the server.
import { DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { JetStreamCodes, jetStreamCode } from './errors.js';

export interface StateStoreOptions {
  /** Stream name, e.g. KAPPA_TAGGER_STATE. */
  stream: string;
  /** Subject prefix; a key k lives at <prefix>.<k> (k: NATS tokens separated by dots). */
  subjectPrefix: string;
  /** A value not written again for this long is dropped. */
  maxAgeMs: number;
  maxBytes?: number;
}

/** Made by Bus.openStateStore(). */
export class StateStore {
  /** @internal */
  constructor(
    private readonly clients: { js: JetStreamClient; jsm: JetStreamManager },
    private readonly options: StateStoreOptions,
  ) {}

  /** Creates or updates the stream. Safe from every replica at once. */
  async open(): Promise<void> {
    const { jsm } = this.clients;
    const config = {
      name: this.options.stream,
      subjects: [`${this.options.subjectPrefix}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_msgs_per_subject: 1,
      max_age: nanos(this.options.maxAgeMs),
      max_bytes: this.options.maxBytes ?? 256 * 1024 ** 2,
      duplicate_window: nanos(Math.min(120_000, this.options.maxAgeMs)),
    };
    try {
      await jsm.streams.info(config.name);
      await jsm.streams.update(config.name, config);
    } catch (error) {
      if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) throw error;
      try {
        await jsm.streams.add(config);
      } catch (addError) {
        // Another replica created it between our info and add.
        await jsm.streams.update(config.name, config).catch(() => {
          throw addError;
        });
      }
    }
  }

  /** Stores the value of a key (replacing the previous one). `id` dedupes replicas' writes. */
  async put(key: string, value: Uint8Array, id?: string): Promise<void> {
    await this.clients.js.publish(`${this.options.subjectPrefix}.${key}`, value, id !== undefined ? { msgID: id } : {});
  }

  /** The last value of every key, read once (an ordered consumer, last message per subject). */
  async load(): Promise<Map<string, Uint8Array>> {
    const values = new Map<string, Uint8Array>();
    const info = await this.clients.jsm.streams.info(this.options.stream);
    if (info.state.messages === 0) return values;
    const consumer = await this.clients.js.consumers.get(this.options.stream, {
      filter_subjects: `${this.options.subjectPrefix}.>`,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    const prefix = `${this.options.subjectPrefix}.`;
    const messages = await consumer.consume();
    for await (const message of messages) {
      values.set(message.subject.slice(prefix.length), message.data);
      if (message.info.pending === 0) break;
    }
    await messages.close();
    return values;
  }
}
