// Turns `kappa observe` flags into a GetFlowsRequest for the Observer.
import { FlowFilterSchema, GetFlowsRequestSchema, IpProtocol, Vantage, create } from '@kappa/contracts';
import type { GetFlowsRequest } from '@kappa/contracts';
import { ConfigError, parseDurationMs } from '@kappa/config';

export interface ObserveFilters {
  /** Milliseconds back from now, or an absolute time (unix ms). */
  since?: { agoMs: number } | { atMs: number } | undefined;
  follow: boolean;
  limit: number;
  node?: string[] | undefined;
  namespace?: string[] | undefined;
  pod?: string[] | undefined;
  workload?: string[] | undefined;
  process?: string[] | undefined;
  port?: string[] | undefined;
  protocol?: string[] | undefined;
  vantage?: 'src' | 'dst' | undefined;
  joined?: 'true' | 'false' | undefined;
  ip?: string[] | undefined;
}

/** tcp, udp, icmp, icmpv6, sctp or an IANA protocol number. */
export function parseProtocol(text: string): number {
  // protobuf-es drops the IP_PROTOCOL_ prefix from the enum's member names.
  const named = IpProtocol[text.toUpperCase() as keyof typeof IpProtocol];
  if (typeof named === 'number') return named;
  if (/^\d+$/.test(text) && Number(text) <= 255) return Number(text);
  throw new ConfigError('protocol', text, 'tcp, udp, icmp, icmpv6, sctp or a protocol number', '--protocol');
}

/** --since: a duration back from now (30s, 5m) or an RFC 3339 time (2026-11-26T08:00:00Z). */
export function parseSince(text: string | undefined): ObserveFilters['since'] {
  if (text === undefined) return undefined;
  const ago = parseDurationMs(text);
  if (ago !== undefined) return { agoMs: ago };
  const at = /^\d{4}-\d{2}-\d{2}T/.test(text) ? Date.parse(text) : Number.NaN;
  if (!Number.isNaN(at)) return { atMs: at };
  throw new ConfigError('since', text, 'a duration like 30s or 5m, or an RFC 3339 time like 2026-11-26T08:00:00Z', '--since');
}

export function observeRequest(f: ObserveFilters, nowMs = Date.now()): GetFlowsRequest {
  return create(GetFlowsRequestSchema, {
    sinceNs: f.since === undefined ? 0n : BigInt('agoMs' in f.since ? nowMs - f.since.agoMs : f.since.atMs) * 1_000_000n,
    follow: f.follow,
    limit: f.limit,
    filter: create(FlowFilterSchema, {
      node: f.node ?? [],
      namespace: f.namespace ?? [],
      pod: f.pod ?? [],
      workload: f.workload ?? [],
      process: f.process ?? [],
      port: (f.port ?? []).map(Number),
      protocol: (f.protocol ?? []).map(parseProtocol),
      vantage: f.vantage === 'src' ? Vantage.SRC : f.vantage === 'dst' ? Vantage.DST : Vantage.UNSPECIFIED,
      ...(f.joined === undefined ? {} : { joined: f.joined === 'true' }),
      ip: f.ip ?? [],
    }),
  });
}
