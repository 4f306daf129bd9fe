// A prom-client registry per service, with default process metrics and a service label.
import { Registry, collectDefaultMetrics } from 'prom-client';

export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  // The event-loop delay histogram samples with a timer: prom-client's default of 10 ms woke every
  // service 100 times a second, half of an idle capture's CPU (BENCHMARKS.md, bench:idle). At
  // 100 ms a stall of the loop still shows; a node's idle agents cost half as much.
  collectDefaultMetrics({ register: registry, prefix: 'kappa_', eventLoopMonitoringPrecision: 100 });
  return registry;
}
