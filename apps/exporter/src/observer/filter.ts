// FlowFilter matching for the Observer: every set field must match, a repeated field matches any
// of its values, and "either end" fields look at src and dst.
import { Vantage, canonicalIp } from '@kappa/contracts';
import type { Endpoint, FlowFilter, FlowRecord } from '@kappa/contracts';

export type FlowPredicate = (record: FlowRecord) => boolean;

function eitherEnd(values: readonly string[], read: (e: Endpoint | undefined) => string | undefined): FlowPredicate | undefined {
  if (values.length === 0) return undefined;
  const wanted = new Set(values);
  return (r) => {
    const a = read(r.src);
    const b = read(r.dst);
    return (a !== undefined && a !== '' && wanted.has(a)) || (b !== undefined && b !== '' && wanted.has(b));
  };
}

function canonical(ip: string): string {
  try {
    return canonicalIp(ip);
  } catch {
    return ip;
  }
}

/** Compiles a filter once per request; the predicate runs on every buffered and new record. */
export function compileFilter(filter: FlowFilter | undefined): FlowPredicate {
  if (!filter) return () => true;
  const checks: FlowPredicate[] = [];
  if (filter.node.length > 0) {
    const nodes = new Set(filter.node);
    checks.push((r) => nodes.has(r.node));
  }
  const either = [
    eitherEnd(filter.namespace, (e) => e?.kube?.objectNamespace || e?.kube?.workloadNamespace),
    eitherEnd(filter.pod, (e) => (e?.kube?.objectType === 'pod' || e?.kube?.objectType === '' ? e?.kube?.objectName : undefined)),
    eitherEnd(filter.workload, (e) => e?.kube?.workloadName),
    eitherEnd(filter.process, (e) => e?.process?.name),
    eitherEnd(filter.ip.map(canonical), (e) => e?.ip),
  ];
  for (const check of either) if (check) checks.push(check);
  if (filter.port.length > 0) {
    const ports = new Set(filter.port);
    checks.push((r) => ports.has(r.src?.port ?? -1) || ports.has(r.dst?.port ?? -1));
  }
  if (filter.protocol.length > 0) {
    const protocols = new Set<number>(filter.protocol);
    checks.push((r) => protocols.has(r.protocol));
  }
  if (filter.vantage !== Vantage.UNSPECIFIED) {
    const vantage = filter.vantage;
    checks.push((r) => r.vantage === vantage);
  }
  if (filter.joined !== undefined) {
    const joined = filter.joined;
    checks.push((r) => r.joined === joined);
  }
  return (r) => checks.every((check) => check(r));
}
