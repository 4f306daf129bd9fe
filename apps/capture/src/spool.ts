// Drained batches on disk until the sink has them: the kernel forgot those counts at the drain,
// so a crash before the publish was acked would lose them. A restart sends the spool first,
// with the same batchIds, so a batch that had in fact arrived is dropped by JetStream's dedup.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { decodeFlowBatch, encodeFlowBatch } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';

export class Spool {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Durable on return: written to a temporary name, fsynced, renamed, directory fsynced. */
  save(batch: FlowBatch): void {
    const file = this.file(batch.batchId);
    const temporary = `${file}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeSync(fd, encodeFlowBatch(batch));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
    const dirFd = openSync(this.dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }

  remove(batch: FlowBatch): void {
    rmSync(this.file(batch.batchId), { force: true });
  }

  /** Every spooled batch, oldest first. A leftover .tmp is a save a crash cut short: ignored (the documented window). */
  load(): FlowBatch[] {
    const batches = readdirSync(this.dir)
      .filter((name) => name.endsWith('.pb'))
      .map((name) => decodeFlowBatch(readFileSync(join(this.dir, name))));
    return batches.sort((a, b) => (a.createdNs < b.createdNs ? -1 : a.createdNs > b.createdNs ? 1 : a.batchId.localeCompare(b.batchId)));
  }

  /** After a graceful stop: removes the spool folder and the state folder when they are empty. */
  removeIfEmpty(): void {
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
