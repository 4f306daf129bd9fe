// Drained batches on disk until the sink has them: the kernel forgot those counts at the drain,
// so a crash before the publish was acked would lose them. The file holds the very bytes that are
// published (encoded once), so a restart sends the spool first with the same batchIds, and a batch
// that had in fact arrived is dropped by JetStream's dedup. Only the list of waiting batches is
// kept in memory, never their records: a long NATS outage costs disk, bounded by
// --max-unsent-batches, not RSS.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** A batch waiting in the spool. */
export interface SpooledBatch {
  readonly batchId: string;
  readonly records: number;
  readonly file: string;
}

export class Spool {
  private readonly dirFd: number;

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.dirFd = openSync(dir, 'r');
  }

  /**
   * On disk on return: written to a temporary name and renamed, so a restart never reads half a
   * batch. Not fsynced: the page cache outlives a crash of this process, which is what the spool
   * is for while a batch is in flight (a few ms). A crash of the machine loses the kernel's flow
   * maps, the interval being counted, with it; a batch that has to wait for the sink is made
   * durable by persist().
   */
  save(batchId: string, bytes: Uint8Array, records: number): SpooledBatch {
    const file = this.file(batchId);
    const temporary = `${file}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeSync(fd, bytes);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
    return { batchId, records, file };
  }

  /** Durable on return: the batch's file and the folder's entry fsynced (a batch that waits for the sink). */
  persist(batch: SpooledBatch): void {
    const fd = openSync(batch.file, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    fsyncSync(this.dirFd);
  }

  read(batch: SpooledBatch): Uint8Array {
    return readFileSync(batch.file);
  }

  remove(batch: SpooledBatch): void {
    rmSync(batch.file, { force: true });
  }

  /** Every spooled batch, oldest first. A leftover .tmp is a save a crash cut short: ignored (the documented window). */
  load(): SpooledBatch[] {
    const batches = readdirSync(this.dir)
      .filter((name) => name.endsWith('.pb'))
      .map((name) => {
        const file = join(this.dir, name);
        const { batchId, records, createdNs } = scanFlowBatch(readFileSync(file));
        return { batch: { batchId, records, file }, createdNs, mtimeMs: statSync(file).mtimeMs };
      });
    batches.sort((a, b) => (a.createdNs < b.createdNs ? -1 : a.createdNs > b.createdNs ? 1 : a.mtimeMs - b.mtimeMs || a.batch.batchId.localeCompare(b.batch.batchId)));
    return batches.map((b) => b.batch);
  }

  /** After a graceful stop: removes the spool folder and the state folder when they are empty. */
  removeIfEmpty(): void {
    closeSync(this.dirFd);
    for (const dir of [this.dir, dirname(this.dir)]) {
      try {
        rmdirSync(dir);
      } catch {
        return; // not empty: a batch still waits for the next start
      }
    }
  }

  private file(batchId: string): string {
    return join(this.dir, `${encodeURIComponent(batchId)}.pb`);
  }
}

/** batch_id (1), created_ns (3) and the number of records (4) of an encoded FlowBatch, without decoding them. */
export function scanFlowBatch(bytes: Uint8Array): { batchId: string; createdNs: bigint; records: number } {
  let at = 0;
  let batchId = '';
  let createdNs = 0n;
  let records = 0;
  const varint = (): bigint => {
    let value = 0n;
    for (let shift = 0n; at < bytes.length; shift += 7n) {
      const byte = bytes[at++]!;
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
    throw new Error('truncated varint in a spooled batch');
  };
  while (at < bytes.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) {
      const value = varint();
      if (field === 3) createdNs = value;
    } else if (wire === 2) {
      const length = Number(varint());
      if (field === 1) batchId = Buffer.from(bytes.subarray(at, at + length)).toString('utf8');
      if (field === 4) records++;
      at += length;
    } else {
      throw new Error(`unexpected wire type ${wire} in a spooled batch`);
    }
  }
  return { batchId, createdNs, records };
}
