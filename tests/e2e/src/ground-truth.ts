// What really crossed each simulated pod's interface: tcpdump captures read back with tshark and
// summed per conversation and direction, in IP bytes (IPv6: payload length + 40 header bytes).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { run } from './topology.js';

export interface Capture {
  netns: string;
  device: string;
  file: string;
  process: ChildProcess;
}

/** tcpdump of `device` in network namespace `netns`. */
export async function startCapture(netns: string, device: string, file: string): Promise<Capture> {
  const child = spawn('ip', ['netns', 'exec', netns, 'tcpdump', '-i', device, '-w', file, '-U', '-s', '128', 'ip or ip6'], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump on ${device} did not start`)), 10_000);
    child.stderr?.on('data', (d: Buffer) => {
      if (/listening on/.test(d.toString())) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { netns, device, file, process: child };
}

export async function stopCapture(capture: Capture): Promise<void> {
  const exited = new Promise((r) => capture.process.once('exit', r));
  capture.process.kill('SIGINT');
  await exited;
}

export interface Packet {
  protocol: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  ipBytes: number;
}

export function readPackets(file: string): Packet[] {
  const out = run('tshark', [
    '-r', file, '-T', 'fields', '-E', 'separator=|',
    '-e', 'ip.proto', '-e', 'ipv6.nxt', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'ipv6.src', '-e', 'ipv6.dst',
    '-e', 'ip.len', '-e', 'ipv6.plen', '-e', 'tcp.srcport', '-e', 'tcp.dstport', '-e', 'udp.srcport', '-e', 'udp.dstport',
  ]);
  const packets: Packet[] = [];
  for (const line of out.split('\n').filter(Boolean)) {
    const [proto4, proto6, src4, dst4, src6, dst6, len4, plen6, tsp, tdp, usp, udp] = line.split('|');
    // ICMP errors quote an inner header, which tshark lists as a second value: take the outer.
    const first = (v: string | undefined) => (v ?? '').split(',')[0] ?? '';
    const v4 = first(src4) !== '';
    packets.push({
      protocol: Number(first(v4 ? proto4 : proto6)),
      src: first(v4 ? src4 : src6),
      dst: first(v4 ? dst4 : dst6),
      srcPort: Number(first(tsp) || first(usp) || 0),
      dstPort: Number(first(tdp) || first(udp) || 0),
      ipBytes: v4 ? Number(first(len4)) : Number(first(plen6)) + 40,
    });
  }
  return packets;
}

export interface DirectionTotals {
  bytes: number;
  packets: number;
  reverseBytes: number;
  reversePackets: number;
}

/** Totals of one conversation, oriented from its initiator (src) to its responder (dst). */
export function conversationTotals(
  packets: Packet[],
  protocol: number,
  src: { ip: string; port: number },
  dst: { ip: string; port: number },
): DirectionTotals {
  const totals = { bytes: 0, packets: 0, reverseBytes: 0, reversePackets: 0 };
  for (const p of packets) {
    if (p.protocol !== protocol) continue;
    if (p.src === src.ip && p.srcPort === src.port && p.dst === dst.ip && p.dstPort === dst.port) {
      totals.bytes += p.ipBytes;
      totals.packets++;
    } else if (p.src === dst.ip && p.srcPort === dst.port && p.dst === src.ip && p.dstPort === src.port) {
      totals.reverseBytes += p.ipBytes;
      totals.reversePackets++;
    }
  }
  return totals;
}
