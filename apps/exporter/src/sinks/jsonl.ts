// The JSON Lines sink: one canonical protobuf JSON FlowRecord per line, appended to a file that is
// rotated by size (flows.jsonl → flows.jsonl.1 → … → flows.jsonl.<keep>).
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { flowRecordToJson } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { JsonlWriteError } from '../errors.js';
import type { FlowSink } from './sink.js';

export interface JsonlSinkOptions {
  path: string;
  /** Rotate before the file would grow past this size. */
  maxBytes: number;
  /** Rotated files kept besides the live one. */
  keep: number;
}

export class JsonlSink implements FlowSink {
  readonly name = 'jsonl';
  private file: FileHandle | undefined;
  private size = 0;
  /** Writes are serialised so lines of two batches never interleave and rotation is atomic. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: JsonlSinkOptions) {}

  async start(): Promise<void> {
    try {
      await mkdir(dirname(this.options.path), { recursive: true });
      await this.openFile();
    } catch (cause) {
      throw new JsonlWriteError(this.options.path, { cause });
    }
  }

  private async openFile(): Promise<void> {
    this.file = await open(this.options.path, 'a');
    this.size = (await stat(this.options.path)).size;
  }

  private async rotate(): Promise<void> {
    await this.file?.close();
    this.file = undefined;
    const { path, keep } = this.options;
    if (keep <= 0) {
      await rm(path, { force: true });
    } else {
      await rm(`${path}.${keep}`, { force: true });
      for (let i = keep - 1; i >= 1; i--) await rename(`${path}.${i}`, `${path}.${i + 1}`).catch(() => undefined);
      await rename(path, `${path}.1`);
    }
    await this.openFile();
  }

  write(batch: FlowBatch): Promise<void> {
    const task = this.queue.then(() => this.append(batch));
    this.queue = task.catch(() => undefined);
    return task;
  }

  private async append(batch: FlowBatch): Promise<void> {
    if (batch.records.length === 0) return;
    let text = '';
    for (const record of batch.records) text += `${JSON.stringify(flowRecordToJson(record))}\n`;
    const bytes = Buffer.from(text, 'utf8');
    try {
      if (!this.file) await this.openFile();
      if (this.size > 0 && this.size + bytes.length > this.options.maxBytes) await this.rotate();
      await this.file!.write(bytes);
      this.size += bytes.length;
    } catch (cause) {
      // Reopen on the next batch: the file may have been removed or the disk freed.
      await this.file?.close().catch(() => undefined);
      this.file = undefined;
      throw new JsonlWriteError(this.options.path, { cause });
    }
  }

  async close(): Promise<void> {
    await this.queue;
    await this.file?.close();
    this.file = undefined;
  }
}
