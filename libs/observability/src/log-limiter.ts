// Bounds the log lines that bad input can cause: a flood of undecodable messages or failing
// requests writes a few lines and then one summary per interval with the count it held back,
// instead of a line per input (100 000 hostile messages once wrote ~20 MB per service). Nothing is
// lost from the metrics: callers count every event in their counters whether or not it is logged.
import type { Logger } from 'pino';

export interface LogLimiterOptions {
  /** Lines of one kind written per interval before the rest are only counted. */
  burst?: number;
  intervalMs?: number;
}

interface Window {
  startedMs: number;
  written: number;
  suppressed: number;
  level: 'warn' | 'error';
  message: string;
}

/** What code that logs per input needs: a LogLimiter, or a plain logger in tests. */
export interface InputLog {
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export class LogLimiter implements InputLog {
  private readonly windows = new Map<string, Window>();
  private readonly burst: number;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    options: LogLimiterOptions = {},
  ) {
    this.burst = options.burst ?? 5;
    this.intervalMs = options.intervalMs ?? 10_000;
  }

  warn(fields: Record<string, unknown>, message: string): void {
    this.write('warn', fields, message);
  }

  error(fields: Record<string, unknown>, message: string): void {
    this.write('error', fields, message);
  }

  /** Writes the held-back counts now (at shutdown). */
  flush(): void {
    const now = Date.now();
    for (const [key, window] of this.windows) this.summarize(key, window, now);
    this.windows.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The message is the kind: one window per distinct message text. */
  private write(level: 'warn' | 'error', fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    let window = this.windows.get(message);
    if (window && now - window.startedMs >= this.intervalMs) {
      this.summarize(message, window, now);
      window = undefined;
    }
    if (!window) {
      window = { startedMs: now, written: 0, suppressed: 0, level, message };
      this.windows.set(message, window);
      this.startTimer();
    }
    if (window.written < this.burst) {
      window.written++;
      this.logger[level](fields, message);
    } else {
      window.suppressed++;
    }
  }

  private summarize(key: string, window: Window, now: number): void {
    if (window.suppressed > 0) {
      this.logger[window.level](
        { suppressed: window.suppressed, seconds: Math.round((now - window.startedMs) / 1000) },
        `${window.message} (${window.suppressed} more like this not logged; the metrics count every one)`,
      );
    }
    this.windows.delete(key);
  }

  private startTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const [key, window] of this.windows) if (now - window.startedMs >= this.intervalMs) this.summarize(key, window, now);
      if (this.windows.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }, this.intervalMs);
    this.timer.unref();
  }
}
