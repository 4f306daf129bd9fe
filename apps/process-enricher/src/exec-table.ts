// What each process was given at exec, as capture saw it in the kernel (sched_process_exec):
// its name, the file run and its arguments. A process that lived 20 ms is gone before its first
// record is enriched; this is where its command line comes from. Capture sends one JSON line per
// exec over a unix socket on the node (raw argv stays on the node; it is redacted here before
// any record leaves). Keyed by (pid, start time), so a reused pid never lends another's.
import { mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { parseExecLine } from '@kappa/contracts';
import type { ExecEvent } from '@kappa/contracts';

export class ExecTable {
  // Insertion order is age order: the oldest go first when the table is full.
  private readonly byKey = new Map<string, { event: ExecEvent; at: number }>();
  /** pid → the latest exec of that pid (for stamps without a start time). */
  private readonly latestByPid = new Map<number, ExecEvent>();
  received = 0;
  malformed = 0;

  constructor(private readonly options: { maxEntries?: number; ttlMs?: number; now?: () => number } = {}) {}

  get size(): number {
    return this.byKey.size;
  }

  add(event: ExecEvent): void {
    const key = `${event.pid}:${event.startTimeTicks}`;
    this.byKey.delete(key);
    this.byKey.set(key, { event, at: (this.options.now ?? Date.now)() });
    this.latestByPid.set(event.pid, event);
    this.received += 1;
    const max = this.options.maxEntries ?? 65_536;
    while (this.byKey.size > max) this.evictOldest();
  }

  private evictOldest(): void {
    const oldest = this.byKey.entries().next();
    if (oldest.done) return;
    const [key, { event }] = oldest.value;
    this.byKey.delete(key);
    if (this.latestByPid.get(event.pid) === event) this.latestByPid.delete(event.pid);
  }

  /** The exec of this process: by (pid, start time); without a start time, the pid's latest
   *  exec if it ran in the stamped cgroup. */
  get(pid: number, startTimeTicks: bigint, cgroupId: bigint): ExecEvent | undefined {
    const ttl = this.options.ttlMs ?? 600_000;
    const now = (this.options.now ?? Date.now)();
    while (this.byKey.size > 0) {
      const oldest = this.byKey.values().next().value!;
      if (now - oldest.at < ttl) break;
      this.evictOldest();
    }
    if (startTimeTicks !== 0n) return this.byKey.get(`${pid}:${startTimeTicks}`)?.event;
    const latest = this.latestByPid.get(pid);
    return latest && cgroupId !== 0n && latest.cgroupId === cgroupId ? latest : undefined;
  }
}

/** Listens on a unix socket for capture's exec lines and fills the table. */
export class ExecListener {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly path: string,
    private readonly table: ExecTable,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    // A socket file left by an earlier run would make listen fail with EADDRINUSE.
    rmSync(this.path, { force: true });
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      const lines = createInterface({ input: socket });
      lines.on('line', (line) => {
        const event = parseExecLine(line);
        if (event) this.table.add(event);
        else this.table.malformed += 1;
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.path, { force: true });
  }
}
