// Turns `kappa observe` flags into a GetFlowsRequest for the Observer.
import { FlowFilterSchema, GetFlowsRequestSchema, IpProtocol, Vantage, create } from '@kappa/contracts';
import type { GetFlowsRequest } from '@kappa/contracts';
import { ConfigError } from '@kappa/config';

export interface ObserveFilters {
  since?: number | undefined;
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
  const key = `IP_PROTOCOL_${text.toUpperCase()}` as keyof typeof IpProtocol;
  const named = IpProtocol[key];
  if (typeof named === 'number') return named;
  if (/^\d+$/.test(text) && Number(text) <= 255) return Number(text);
  throw new ConfigError('protocol', text, 'tcp, udp, icmp, icmpv6, sctp or a protocol number', '--protocol');
}

export function observeRequest(f: ObserveFilters, nowMs = Date.now()): GetFlowsRequest {
  return create(GetFlowsRequestSchema, {
    sinceNs: f.since === undefined ? 0n : BigInt(nowMs - f.since) * 1_000_000n,
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
