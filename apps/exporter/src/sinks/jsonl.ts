// The JSON Lines sink: one canonical protobuf JSON FlowRecord per line, written straight from the
// record bytes (ProtoJsonWriter), appended to a file that is rotated by size (flows.jsonl →
// flows.jsonl.1 → … → flows.jsonl.<keep>).
//
// A batch is acked only after it is written, so a crash between the write and the ack brings the
// batch back after the restart. At start the sink reads the record ids in the file's tail (and in
// the last rotated file when the live one is shorter than the window) and skips those records when
// a redelivered batch brings them again: nothing is written twice. A line the crash cut short is
// removed first (its batch was not acked, so it comes back whole).
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FlowBatchView, FlowFields, FlowRecordSchema, KubeSchema, ProcessSchema } from '@kappa/contracts';
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { JsonlWriteError } from '../errors.js';
import { cutBack, writeFully } from '../files.js';
import { ProtoJsonWriter } from '../jsonl/json-writer.js';
import type { ExportBatch, FlowSink } from './sink.js';

const NEWLINE = 0x0a;

export interface JsonlSinkOptions {
  path: string;
  /** Rotate before the file would grow past this size. */
  maxBytes: number;
  /** Rotated files kept besides the live one. */
  keep: number;
  /**
   * Bytes at the end of the files whose record ids are remembered at start: enough for every
   * batch that can be written and not yet acked when the process dies.
   */
  dedupeWindowBytes?: number;
  logger?: Logger;
  registry?: Registry;
}

export class JsonlSink implements FlowSink {
  readonly name = 'jsonl';
  private file: FileHandle | undefined;
  private size = 0;
  /** Writes are serialised so lines of two batches never interleave and rotation is atomic. */
  private queue: Promise<void> = Promise.resolve();
  // A pod's Kube and a process's Process repeat byte for byte in every record of their conversations.
  private readonly json = new ProtoJsonWriter(FlowRecordSchema, 1024 * 1024, { memoize: [KubeSchema, ProcessSchema] });
  private readonly cursor = FlowBatchView.recordCursor();
  /** Ids of the records found in the files' tail at start. */
  private readonly seen = new Set<string>();
  private readonly skipped: Counter | undefined;
  private readonly invalid: Counter | undefined;
  /** Records a redelivered batch brought again that were already in the file. */
  skippedRecords = 0;

  constructor(private readonly options: JsonlSinkOptions) {
    const registers = options.registry ? [options.registry] : [];
    if (options.registry) {
      this.skipped = new Counter({
        name: 'kappa_exporter_jsonl_duplicates_skipped_total',
        help: 'Records of redelivered batches already in the JSON Lines file (written before a crash, not acked): not written again',
        registers,
      });
      this.invalid = new Counter({ name: 'kappa_exporter_jsonl_invalid_records_total', help: 'Records that are not valid FlowRecords: not written', registers });
    }
  }

  /** Ids remembered from the file at start (for tests and logs). */
  get rememberedIds(): number {
    return this.seen.size;
  }

  async start(): Promise<void> {
    try {
      await mkdir(dirname(this.options.path), { recursive: true });
      await this.readTail();
      await this.openFile();
    } catch (cause) {
      throw new JsonlWriteError(this.options.path, { cause });
    }
  }

  /** Removes a line cut short by a crash, and remembers the ids of the last window's records. */
  private async readTail(): Promise<void> {
    await this.removeCutLine(this.options.path);
    const window = this.options.dedupeWindowBytes ?? 32 * 1024 * 1024;
    const covered = await this.rememberIds(this.options.path, window);
    if (covered < window && this.options.keep > 0) await this.rememberIds(`${this.options.path}.1`, window - covered);
    if (this.seen.size > 0) this.options.logger?.info({ path: this.options.path, records: this.seen.size }, 'JSON Lines: remembered the ids of the last records written (a redelivered batch skips them)');
  }

  /** A last line without its newline: the write of its batch was cut, so that batch was not acked. */
  private async removeCutLine(path: string): Promise<void> {
    const handle = await openIfExists(path, 'r+');
    if (!handle) return;
    try {
      const size = (await handle.stat()).size;
      const last = Buffer.alloc(1);
      if (size === 0) return;
      await readFully(handle, last, size - 1);
      if (last[0] === NEWLINE) return;
      // Back to the previous newline, a chunk at a time.
      const chunk = Buffer.allocUnsafe(64 * 1024);
      let end = size;
      let keep = 0;
      while (end > 0) {
        const from = Math.max(0, end - chunk.length);
        const part = chunk.subarray(0, end - from);
        await readFully(handle, part, from);
        const newline = part.lastIndexOf(NEWLINE);
        if (newline >= 0) {
          keep = from + newline + 1;
          break;
        }
        end = from;
      }
      await handle.truncate(keep);
      this.options.logger?.warn({ path, bytes: size - keep }, 'JSON Lines: removed a line cut short by a crash (its batch is redelivered)');
    } finally {
      await handle.close();
    }
  }

  /** Remembers the ids of the whole lines in the last `window` bytes of a file; returns the bytes read. */
  private async rememberIds(path: string, window: number): Promise<number> {
    if (window <= 0) return 0;
    const handle = await openIfExists(path, 'r');
    if (!handle) return 0;
    try {
      const size = (await handle.stat()).size;
      const from = Math.max(0, size - window);
      const tail = Buffer.allocUnsafe(size - from);
      await readFully(handle, tail, from);
      const end = tail.lastIndexOf(NEWLINE) + 1;
      // The first line is whole only when the window starts at a line start.
      let start = from === 0 ? 0 : tail.indexOf(NEWLINE) + 1;
      if (start === 0 && from > 0) start = end;
      while (start < end) {
        const lineEnd = tail.indexOf(NEWLINE, start);
        const line = tail.toString('utf8', start, lineEnd);
        start = lineEnd + 1;
        try {
          const id = (JSON.parse(line) as { id?: unknown }).id;
          if (typeof id === 'string' && id !== '') this.seen.add(id);
        } catch {
          // Not a record line (an edited file): nothing to remember.
        }
      }
      return size - from;
    } finally {
      await handle.close();
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

  write(batch: ExportBatch): Promise<void> {
    // The view stays valid until this write settles, so the lines are made when the batch's turn
    // comes, into the one reused buffer.
    const task = this.queue.then(() => this.append(batch));
    this.queue = task.catch(() => undefined);
    return task;
  }

  private async append(batch: ExportBatch): Promise<void> {
    const view = batch.view;
    if (view.length === 0) return;
    const json = this.json;
    json.reset();
    const dedupe = batch.redelivered && this.seen.size > 0;
    let invalid = 0;
    let skipped = 0;
    for (let i = 0; i < view.length; i++) {
      if (dedupe && this.seen.has(view.record(i, this.cursor).string(FlowFields.FlowRecord.id))) {
        skipped++;
        continue;
      }
      // The view has checked the batch, so this fails only for bytes protobuf-es refuses too.
      if (!json.message(view.bytes, view.recordStart(i), view.recordEnd(i))) {
        invalid++;
        continue;
      }
      json.byte(NEWLINE);
    }
    if (skipped > 0) {
      this.skippedRecords += skipped;
      this.skipped?.inc(skipped);
    }
    if (invalid > 0) this.invalid?.inc(invalid);
    const bytes = json.bytes();
    if (bytes.length === 0) return;
    try {
      if (!this.file) await this.openFile();
      if (this.size > 0 && this.size + bytes.length > this.options.maxBytes) await this.rotate();
      await writeFully(this.file!, bytes);
      this.size += bytes.length;
    } catch (cause) {
      // A write that failed part way (a full disk) would leave part of a line, which the next
      // batch's first line would join: the file goes back to where the batch began. The batch is
      // not acked, and comes again. Then reopen on the next batch: the file may have been removed
      // or the disk freed.
      const reported = this.file ? await cutBack(cause, [[this.file, this.size]], 'the next batch joins the half line left') : cause;
      await this.file?.close().catch(() => undefined);
      this.file = undefined;
      throw new JsonlWriteError(this.options.path, { cause: reported });
    }
  }

  async close(): Promise<void> {
    await this.queue;
    await this.file?.close();
    this.file = undefined;
  }
}

async function openIfExists(path: string, flags: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, flags);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function readFully(handle: FileHandle, into: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new Error(`the file ended ${into.length - done} bytes early`);
    done += bytesRead;
  }
}
