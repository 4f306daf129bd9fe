// The Observer's memory of recent flows: a fixed-capacity ring of records with their arrival time,
// trimmed by age, that also notifies followers of each new record.
import type { FlowRecord } from '@kappa/contracts';

export interface BufferedFlow {
  record: FlowRecord;
  /** When the exporter received it, unix ns. */
  receivedNs: bigint;
}

export type FlowListener = (flow: BufferedFlow) => void;

export class FlowRing {
  private readonly slots: (BufferedFlow | undefined)[];
  /** Index of the oldest entry. */
  private head = 0;
  private count = 0;
  private readonly listeners = new Set<FlowListener>();

  constructor(
    readonly capacity: number,
    /** Entries older than this are dropped. */
    private readonly retentionNs: bigint,
  ) {
    this.slots = new Array<BufferedFlow | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(record: FlowRecord, receivedNs: bigint): void {
    const flow: BufferedFlow = { record, receivedNs };
    const tail = (this.head + this.count) % this.capacity;
    this.slots[tail] = flow;
    if (this.count < this.capacity) this.count++;
    else this.head = (this.head + 1) % this.capacity;
    for (const listener of this.listeners) listener(flow);
  }

  /** Drops entries older than the retention, relative to now. */
  trim(nowNs: bigint): void {
    const oldest = nowNs - this.retentionNs;
    while (this.count > 0) {
      const flow = this.slots[this.head];
      if (flow && flow.receivedNs >= oldest) break;
      this.slots[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.count--;
    }
  }

  /** The buffered flows received at or after sinceNs, oldest first. */
  *since(sinceNs: bigint): Generator<BufferedFlow> {
    for (let i = 0; i < this.count; i++) {
      const flow = this.slots[(this.head + i) % this.capacity];
      if (flow && flow.receivedNs >= sinceNs) yield flow;
    }
  }

  subscribe(listener: FlowListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
