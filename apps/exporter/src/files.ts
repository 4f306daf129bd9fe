// File writes the sinks share, and what makes a written file durable before its sources go.
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

/**
 * Writes all of `bytes` at the handle's position: a write may take only part (a disk filling up).
 * A write that takes nothing fails (retrying it would loop for ever without an error).
 */
export async function writeFully(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
    if (bytesWritten <= 0) throw new Error(`a write took none of its ${bytes.length - done} bytes (${done} of ${bytes.length} written): the file system accepts no more`);
    done += bytesWritten;
  }
}

/**
 * After a write that failed, maybe part way (a full disk): cuts each file back to its size before
 * the write, so no part of a record or line is left for the next write to join. Returns what to
 * report: the write's error, or it with the truncate's when that failed too.
 */
export async function cutBack(cause: unknown, files: readonly (readonly [FileHandle, number])[], consequence: string): Promise<unknown> {
  try {
    await Promise.all(files.map(([handle, size]) => handle.truncate(size)));
    return cause;
  } catch (undo) {
    return new AggregateError([cause, undo], `and removing the partial write failed too (${consequence})`);
  }
}

/**
 * Makes a written file's bytes durable (fdatasync): done before the rename that publishes it, so
 * that after a power loss the name never points at a file with lost or partial contents.
 */
export function syncFile(path: string): Promise<void> {
  return syncPath(path, (handle) => handle.datasync());
}

/** Makes the renames (and creations) in a folder durable (fsync of the folder itself). */
export function syncFolder(dir: string): Promise<void> {
  return syncPath(dir, (handle) => handle.sync());
}

async function syncPath(path: string, sync: (handle: FileHandle) => Promise<void>): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await sync(handle);
  } finally {
    await handle.close();
  }
}
