// How `kappa observe` prints a flow: a table for people (date and time, both ends, bytes and
// packets per direction), a compact one-liner like hubble's, the canonical protobuf JSON of the
// FlowRecord (json) or of the whole GetFlowsResponse (jsonpb), one per line, for tools.
import { GetFlowsResponseSchema, IpProtocol, Vantage, flowRecordToJson, toJson } from '@kappa/contracts';
import type { Endpoint, FlowRecord, GetFlowsResponse } from '@kappa/contracts';

export const tableHeader = [
  'TIME'.padEnd(23),
  'NODE'.padEnd(16),
  'VANTAGE'.padEnd(7),
  'SOURCE'.padEnd(44),
  '   ',
  'DESTINATION'.padEnd(44),
  'PROTO'.padEnd(6),
  'BYTES→'.padStart(10),
  'BYTES←'.padStart(10),
  'PKTS→'.padStart(7),
  'PKTS←'.padStart(7),
  'RTT'.padStart(9),
  'DROPPED'.padStart(8),
  ' JOINED',
].join(' ');

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * "ns/pod[process] dns-name ip:port": the names a person looks for first, then the address. The
 * DNS name is the one the OTHER end resolved this end's address from (its peer_dns_name).
 */
export function endpointLabel(e: Endpoint | undefined, dnsName = ''): string {
  if (!e) return '?';
  const kube = e.kube;
  const name = kube?.objectName ? `${kube.objectNamespace ? `${kube.objectNamespace}/` : ''}${kube.objectName}` : '';
  const process = e.process?.name ? `[${e.process.name}]` : '';
  const address = hostPort(e.ip, e.port);
  return [name + process, dnsName, address].filter((s) => s !== '').join(' ');
}

const srcLabel = (r: FlowRecord) => endpointLabel(r.src, r.dst?.peerDnsName);
const dstLabel = (r: FlowRecord) => endpointLabel(r.dst, r.src?.peerDnsName);

/** " dropped 3 NETFILTER_DROP" when the kernel dropped packets of the flow. */
function dropsText(r: FlowRecord): string {
  const drops = r.drops;
  if (!drops || drops.packets === 0n) return '';
  return ` dropped ${drops.packets}${drops.reason ? ` ${drops.reason}` : ''}`;
}

/** " dns web.shop A NXDOMAIN 1.2ms" for a flow with DNS exchanges. */
function dnsText(r: FlowRecord): string {
  const dns = r.dns;
  if (!dns) return '';
  const type = dnsTypes[dns.queryType] ?? (dns.queryType ? `TYPE${dns.queryType}` : '');
  const rcode = dns.rcode ? ` ${dnsRcodes[dns.rcode] ?? `RCODE${dns.rcode}`}` : '';
  const latency = dns.latencyCount > 0n ? ` ${usLabel(Number(dns.latencySumUs / dns.latencyCount))}` : '';
  return ` dns ${dns.queryName || '?'}${type ? ` ${type}` : ''}${rcode}${latency}`;
}

const dnsTypes: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 65: 'HTTPS' };
const dnsRcodes: Record<number, string> = { 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' };

export function protocolLabel(p: number): string {
  const name = IpProtocol[p];
  return name && p !== 0 ? name.replace(/^IP_PROTOCOL_/, '').toLowerCase() : String(p);
}

/** UTC date and time to the millisecond: 2026-12-04 07:45:01.123. */
export function timeLabel(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 23);
}

function usLabel(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)}ms` : `${us}µs`;
}

function rttLabel(r: FlowRecord): string {
  const us = r.tcp?.srttUs ?? 0;
  return us === 0 ? '-' : usLabel(us);
}

function fit(s: string, width: number): string {
  return s.length > width ? `${s.slice(0, width - 1)}…` : s.padEnd(width);
}

const vantageLabel = (v: Vantage) => (v === Vantage.SRC ? 'src' : v === Vantage.DST ? 'dst' : '-');

export function tableRow(r: FlowRecord): string {
  return [
    timeLabel(r.endNs),
    fit(r.node, 16),
    vantageLabel(r.vantage).padEnd(7),
    fit(srcLabel(r), 44),
    '-> ',
    fit(dstLabel(r), 44),
    protocolLabel(r.protocol).padEnd(6),
    String(r.bytes).padStart(10),
    String(r.reverseBytes).padStart(10),
    String(r.packets).padStart(7),
    String(r.reversePackets).padStart(7),
    rttLabel(r).padStart(9),
    (r.drops?.packets ? String(r.drops.packets) : '-').padStart(8),
    r.joined ? ' yes' : ' no',
  ].join(' ');
}

/** One line per flow, hubble-like: time [node] src -> dst proto bytes→/← packets→/← rtt [dropped n reason] [dns ...]. */
export function compactRow(r: FlowRecord): string {
  return `${timeLabel(r.endNs)} [${r.node}] ${vantageLabel(r.vantage)} ${srcLabel(r)} -> ${dstLabel(r)} ${protocolLabel(r.protocol)} bytes ${r.bytes}→ ${r.reverseBytes}← packets ${r.packets}→ ${r.reversePackets}← rtt ${rttLabel(r)}${dropsText(r)}${dnsText(r)}${r.joined ? '' : ' unjoined'}`;
}

export function jsonLine(r: FlowRecord): string {
  return JSON.stringify(flowRecordToJson(r));
}

export function jsonpbLine(response: GetFlowsResponse): string {
  return JSON.stringify(toJson(GetFlowsResponseSchema, response));
}
