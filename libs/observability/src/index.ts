// Public API of @kappa/observability: logs, metrics and the health endpoints of every service.
export { createLogger, logLevels } from './logger.js';
export { LogLimiter } from './log-limiter.js';
export type { InputLog, LogLimiterOptions } from './log-limiter.js';
export type { Logger } from './logger.js';
export { createRegistry } from './metrics.js';
export { metricsHostOption, startObservabilityServer } from './http.js';
export type { HealthChecks, ObservabilityServer } from './http.js';
export { onShutdown } from './shutdown.js';
export { Counter, Gauge, Histogram, Registry } from 'prom-client';
