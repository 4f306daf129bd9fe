// What the watched processes exec'd (bpf/kappa_exec.h), handed to the process-enricher of this
// node: a client that lives 20 ms has exited before the enricher reads /proc/<pid>, and then its
// command line comes from here. One JSON line per exec over a unix socket on the node
// (--exec-socket); the raw argument list never leaves the node: the enricher redacts it like any
// command line it reads from /proc. The ring is read on a timer and right before every drain, so
// the exec of every process a drained record names is on the socket before the record is published.
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { formatExecLine } from '@kappa/contracts';
import type { ExecEvent } from '@kappa/contracts';
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { EXEC_ARGS_CUT, EXEC_EVENT } from './layout.js';

const F = EXEC_EVENT.fields;
const HEADER = F.args.offset;
/** /proc/<pid>/stat counts start times in clock ticks (USER_HZ 100), as capture stamps them on records. */
const NS_PER_TICK = 10_000_000n;

/** One exec, and whether its argument list was longer than the kernel copies (its cut last argument dropped). */
export interface KernelExec extends ExecEvent {
  cut: boolean;
}

function cString(bytes: Buffer, from: number, size: number): string {
  const end = bytes.indexOf(0, from);
  return bytes.toString('utf8', from, end < 0 || end > from + size ? from + size : end);
}

/** One kappa_exec_event as the ring buffer hands it over (undefined when it is too short). */
export function decodeExecEvent(bytes: Buffer): KernelExec | undefined {
  if (bytes.length < HEADER) return undefined;
  const length = Math.min(bytes.readUInt16LE(F.args_length.offset), bytes.length - HEADER);
  const cut = (bytes[F.flags.offset]! & EXEC_ARGS_CUT) !== 0;
  const args = length > 0 ? bytes.toString('utf8', HEADER, HEADER + length).split('\0') : [];
  // NUL-terminated strings: a whole list ends in an empty piece; a cut one in the cut argument,
  // which is dropped (a cut secret may no longer look like one to the enricher's rules).
  args.pop();
  return {
    pid: bytes.readUInt32LE(F.pid.offset),
    startTimeTicks: bytes.readBigUInt64LE(F.start_boottime_ns.offset) / NS_PER_TICK,
    comm: cString(bytes, F.comm.offset, F.comm.size),
    exe: cString(bytes, F.file.offset, F.file.size),
    args,
    cgroupId: bytes.readBigUInt64LE(F.cgroup_id.offset),
    cut,
  };
}

export interface ExecForwarderOptions {
  /** The process-enricher's unix socket. */
  socketPath: string;
  /** The kernel's ring of kappa_exec_event records. */
  events: { consume(): Buffer[] };
  /** Events the kernel could not copy (ring buffer full), a total since load. */
  lostInKernel: () => bigint;
  /** Lines kept while the enricher is not listening (or slow); beyond it the oldest are dropped, counted. */
  maxQueued?: number;
  /** 0: no timer of its own, the caller calls forward (one timer for every ring). */
  pollMs?: number;
  retryMs?: number;
  logger: Logger;
  registry: Registry;
}

export class ExecForwarder {
  private socket: Socket | undefined;
  private connecting: Promise<boolean> | undefined;
  private queue: string[] = [];
  private readonly poller: NodeJS.Timeout | undefined;
  private retryAt = 0;
  private warned = false;
  private closed = false;
  private lastKernelLost: bigint;
  private readonly events: Counter<'result'>;
  private readonly cut: Counter;
  /** Totals, for tests and logs. */
  sent = 0;
  lost = 0;

  constructor(private readonly options: ExecForwarderOptions) {
    const registers = [options.registry];
    this.events = new Counter({
      name: 'kappa_capture_exec_events_total',
      help: 'Execs of watched processes (result: sent to the process-enricher; lost_ring: the ring buffer was full, raise --exec-buffer; lost_unsent: the enricher did not take them in time)',
      labelNames: ['result'],
      registers,
    });
    this.cut = new Counter({ name: 'kappa_capture_exec_args_cut_total', help: 'Execs whose argument list was longer than the 4 KiB the kernel copies (its cut last argument dropped)', registers });
    // Events a previous instance's programs could not copy are not this one's loss.
    this.lastKernelLost = options.lostInKernel();
    const pollMs = options.pollMs ?? 200;
    this.poller = pollMs > 0 ? setInterval(() => void this.poll(), pollMs).unref() : undefined;
    void this.connect();
  }

  /**
   * Takes what the kernel copied and hands it to the enricher (or queues it while it does not
   * listen). Resolves once the lines are in the socket: a drain awaits it before publishing, so
   * the enricher has each exec before the records of that process.
   */
  async forward(): Promise<void> {
    for (const bytes of this.options.events.consume()) {
      const event = decodeExecEvent(bytes);
      if (!event) continue;
      if (event.cut) this.cut.inc();
      this.queue.push(formatExecLine(event));
    }
    const lostInKernel = this.options.lostInKernel();
    if (lostInKernel > this.lastKernelLost) this.events.inc({ result: 'lost_ring' }, Number(lostInKernel - this.lastKernelLost));
    this.lastKernelLost = lostInKernel;
    const max = this.options.maxQueued ?? 8192;
    if (this.queue.length > max) this.drop(this.queue.length - max);
    if (this.queue.length === 0) return;
    if (!this.socket && !(await this.connect())) return;
    const socket = this.socket;
    // The socket's own buffer is bounded too: a stalled enricher does not grow capture's memory.
    if (!socket || this.queue.length === 0 || socket.writableLength > 4 << 20) return;
    const lines = this.queue;
    this.queue = [];
    this.sent += lines.length;
    this.events.inc({ result: 'sent' }, lines.length);
    await new Promise<void>((resolve) => socket.write(lines.join(''), () => resolve()));
  }

  /** forward() for a timer: a failure is logged, and the next read tries again. */
  poll(): Promise<void> {
    return this.forward().catch((error: unknown) => this.options.logger.warn({ err: error }, 'cannot read exec events'));
  }

  private drop(n: number): void {
    this.queue.splice(0, n);
    this.lost += n;
    this.events.inc({ result: 'lost_unsent' }, n);
  }

  /** Connects (once at a time, at most every --retry); false when the enricher does not listen. */
  private connect(): Promise<boolean> {
    if (this.socket) return Promise.resolve(true);
    if (this.closed || Date.now() < this.retryAt) return Promise.resolve(false);
    this.connecting ??= new Promise<boolean>((resolve) => {
      const socket = connect(this.options.socketPath);
      socket.once('connect', () => {
        this.connecting = undefined;
        this.socket = socket;
        this.options.logger.info({ execSocket: this.options.socketPath }, 'sending exec events to the process-enricher');
        this.warned = false;
        resolve(true);
      });
      socket.on('error', (error: NodeJS.ErrnoException) => {
        if (!this.warned && !this.closed) {
          this.warned = true;
          this.options.logger.warn(
            { execSocket: this.options.socketPath, code: error.code },
            'the process-enricher does not listen for exec events (yet): command lines of processes that exit before enrichment are kept for it (--exec-socket)',
          );
        }
      });
      socket.once('close', () => {
        this.connecting = undefined;
        if (this.socket === socket) this.socket = undefined;
        this.retryAt = Date.now() + (this.options.retryMs ?? 200);
        resolve(false);
      });
    });
    return this.connecting;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.poller);
    this.socket?.end();
    this.socket = undefined;
  }
}
