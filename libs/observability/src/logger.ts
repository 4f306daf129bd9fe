// pino JSON logs, one logger per service, with the service name on every line.
import { pino } from 'pino';
import type { Logger, LevelWithSilent } from 'pino';

export type { Logger };
export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(service: string, level: LevelWithSilent = 'info', destination = 2): Logger {
  return pino({ name: service, level, base: { service, pid: process.pid } }, pino.destination({ fd: destination, sync: true }));
}
