// File writes the sinks share.
import type { FileHandle } from 'node:fs/promises';

/** Writes all of `bytes` at the handle's position: a write may take only part (a disk filling up). */
export async function writeFully(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}
