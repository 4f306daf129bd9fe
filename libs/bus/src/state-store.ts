// A small keyed store on JetStream for state a stage must find again after a restart (the
// tagger's knowledge of deleted pods): one stream, one subject per key, the last value per key
// kept (max_msgs_per_subject 1), values older than maxAge dropped by the server.
import { DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { JetStreamClient, JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';

export interface StateStoreOptions {
  /** Stream name, e.g. KAPPA_TAGGER_STATE. */
  stream: string;
  /** Subject prefix; a key k lives at <prefix>.<k> (k: NATS tokens separated by dots). */
  subjectPrefix: string;
  /** A value not written again for this long is dropped. */
  maxAgeMs: number;
  maxBytes?: number;
}

/**
 * The k8s-tagger's store: pods and Services it knew (deleted ones for their retention), found again
 * after a restart. `kappa streams` (the admin) creates it with these settings: with per-identity
 * permissions the tagger may only read and write its keys. A tagger whose --deleted-retention asks
 * for a longer max age brings the stream up to date where its identity may (npm run up without
 * permissions), and otherwise uses it as it is with a warning.
 */
export const TAGGER_STATE_STORE: StateStoreOptions = {
  stream: 'KAPPA_TAGGER_STATE',
  subjectPrefix: 'kappa.state.k8s-tagger',
  maxAgeMs: 6 * 3_600_000,
};

/** The stream a state store lives on. */
export function stateStreamConfig(options: StateStoreOptions): Partial<StreamConfig> & { name: string } {
  return {
    name: options.stream,
    subjects: [`${options.subjectPrefix}.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_msgs_per_subject: 1,
    max_age: nanos(options.maxAgeMs),
    max_bytes: options.maxBytes ?? 256 * 1024 ** 2,
    duplicate_window: nanos(Math.min(120_000, options.maxAgeMs)),
  };
}

/** Made by Bus.openStateStore(). */
export class StateStore {
  /** @internal */
  constructor(
    private readonly clients: { js: JetStreamClient; jsm: JetStreamManager },
    private readonly options: StateStoreOptions,
  ) {}

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
