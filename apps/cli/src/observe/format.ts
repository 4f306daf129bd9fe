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
  ' JOINED',
].join(' ');

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** "ns/pod[process] ip:port": the names a person looks for first, then the address. */
export function endpointLabel(e: Endpoint | undefined): string {
  if (!e) return '?';
  const kube = e.kube;
  const name = kube?.objectName ? `${kube.objectNamespace ? `${kube.objectNamespace}/` : ''}${kube.objectName}` : '';
  const process = e.process?.name ? `[${e.process.name}]` : '';
  const address = hostPort(e.ip, e.port);
  return [name + process, address].filter((s) => s !== '').join(' ');
}

export function protocolLabel(p: number): string {
  const name = IpProtocol[p];
  return name && p !== 0 ? name.replace(/^IP_PROTOCOL_/, '').toLowerCase() : String(p);
}

/** UTC date and time to the millisecond: 2026-12-04 07:45:01.123. */
export function timeLabel(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 23);
}

function rttLabel(r: FlowRecord): string {
  const us = r.tcp?.srttUs ?? 0;
  if (us === 0) return '-';
  return us >= 1000 ? `${(us / 1000).toFixed(2)}ms` : `${us}µs`;
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
    fit(endpointLabel(r.src), 44),
    '-> ',
    fit(endpointLabel(r.dst), 44),
    protocolLabel(r.protocol).padEnd(6),
    String(r.bytes).padStart(10),
    String(r.reverseBytes).padStart(10),
    String(r.packets).padStart(7),
    String(r.reversePackets).padStart(7),
    rttLabel(r).padStart(9),
    r.joined ? ' yes' : ' no',
  ].join(' ');
}

/** One line per flow, hubble-like: time [node] src -> dst proto bytes→/← packets→/← rtt. */
export function compactRow(r: FlowRecord): string {
  return `${timeLabel(r.endNs)} [${r.node}] ${vantageLabel(r.vantage)} ${endpointLabel(r.src)} -> ${endpointLabel(r.dst)} ${protocolLabel(r.protocol)} bytes ${r.bytes}→ ${r.reverseBytes}← packets ${r.packets}→ ${r.reversePackets}← rtt ${rttLabel(r)}${r.joined ? '' : ' unjoined'}`;
}

export function jsonLine(r: FlowRecord): string {
  return JSON.stringify(flowRecordToJson(r));
}

export function jsonpbLine(response: GetFlowsResponse): string {
  return JSON.stringify(toJson(GetFlowsResponseSchema, response));
}
