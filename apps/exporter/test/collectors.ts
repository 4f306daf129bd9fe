// Real IPFIX collectors for the tests: nfcapd (nfdump 1.7) writing to a temporary folder, and a
// tshark capture on loopback whose packets tshark itself decodes afterwards.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import type { FlowRecord } from '@kappa/contracts';
import { ServerProcess } from '@kappa/testing';

const run = promisify(execFile);

export interface Nfcapd {
  port: number;
  dir: string;
  process: ServerProcess;
  stop(): Promise<void>;
}

/** nfcapd listening on 127.0.0.1:port (UDP), writing into a fresh folder. */
export async function startNfcapd(port: number): Promise<Nfcapd> {
  const dir = mkdtempSync(join(tmpdir(), 'kx-nfcapd-'));
  // A socket buffer of 4 MiB (-B; the kernel caps it at net.core.rmem_max), as the benches give
  // it: with the default ~200 KiB, a loaded machine (CI beside other work) dropped a quarter of a
  // 400-record burst before nfcapd read it (296 of 400 decoded, 2026-12-06).
  const process = new ServerProcess({ command: 'nfcapd', args: ['-p', String(port), '-b', '127.0.0.1', '-w', dir, '-t', '3600', '-B', String(4 * 1024 * 1024)], readyPattern: /Startup/ });
  await process.start();
  return {
    port,
    dir,
    process,
    stop: async () => {
      // Let nfcapd read what is still in its socket buffer before it closes its file.
      await new Promise((r) => setTimeout(r, 500));
      await process.stop();
    },
  };
}

export interface NfdumpFlow {
  sa: string;
  da: string;
  sp: number;
  dp: number;
  pr: string;
  ipkt: number;
  ibyt: number;
  opkt: number;
  obyt: number;
  ts: string;
  te: string;
  dir: number;
}

/** The flows nfdump reads from an nfcapd folder (after nfcapd stopped and closed its file). */
export async function nfdumpFlows(dir: string): Promise<NfdumpFlow[]> {
  if (readdirSync(dir).filter((f) => f.startsWith('nfcapd.')).length === 0) return [];
  const { stdout } = await run('nfdump', ['-R', dir, '-q', '-o', 'csv'], { maxBuffer: 64 * 1024 * 1024 });
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  const header = ['ts', 'te', 'td', 'sa', 'da', 'sp', 'dp', 'pr', 'flg', 'fwd', 'stos', 'ipkt', 'ibyt', 'opkt', 'obyt', 'in', 'out', 'sas', 'das', 'smk', 'dmk', 'dtos', 'dir'];
  const rows = lines[0]?.startsWith('ts,') ? lines.slice(1) : lines;
  return rows
    .filter((l) => /^\d{4}-/.test(l))
    .map((line) => {
      const cells = line.split(',');
      const at = (name: string) => (cells[header.indexOf(name)] ?? '').trim();
      return {
        sa: at('sa'),
        da: at('da'),
        sp: Number(at('sp')),
        dp: Number(at('dp')),
        pr: at('pr'),
        ipkt: Number(at('ipkt')),
        ibyt: Number(at('ibyt')),
        opkt: Number(at('opkt')),
        obyt: Number(at('obyt')),
        ts: at('ts'),
        te: at('te'),
        dir: Number(at('dir')),
      };
    });
}

export interface Capture {
  file: string;
  stop(): Promise<void>;
}

/** tshark capturing `filter` on loopback into a pcapng file. */
export async function startCapture(filter: string): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), 'kx-pcap-'));
  const file = join(dir, 'cap.pcapng');
  const process = new ServerProcess({ command: 'tshark', args: ['-i', 'lo', '-f', filter, '-w', file, '-q'], readyPattern: /Capturing on/ });
  await process.start();
  // dumpcap prints "Capturing on" just before the filter is live; give it a moment.
  await new Promise((r) => setTimeout(r, 500));
  return {
    file,
    stop: async () => {
      await new Promise((r) => setTimeout(r, 300));
      await process.stop('SIGINT');
    },
  };
}

/** tshark's verbose decode of a capture, IPFIX forced on `decodeAs` (e.g. udp.port==4739). */
export async function tsharkText(file: string, decodeAs: string): Promise<string> {
  const { stdout } = await run('tshark', ['-r', file, '-d', `${decodeAs},cflow`, '-V'], { maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

/** tshark's JSON decode (duplicate keys merged into arrays). */
export async function tsharkJson(file: string, decodeAs: string): Promise<unknown[]> {
  const { stdout } = await run('tshark', ['-r', file, '-d', `${decodeAs},cflow`, '-T', 'json', '--no-duplicate-keys'], { maxBuffer: 256 * 1024 * 1024 });
  return JSON.parse(stdout) as unknown[];
}

/** One data record as tshark decodes it: its set (template) id and its fields. */
export interface TsharkRecord {
  setId: number;
  /**
   * tshark's field name → its shown value (cflow.srcport → '30010', cflow.drop_octets → '240');
   * enterprise elements, which tshark does not name, as `pen/type` → their bytes in hex. tshark
   * leaves zero-length values out.
   */
  fields: Map<string, string>;
}

const xmlEntities: Record<string, string> = { '&quot;': '"', '&apos;': "'", '&lt;': '<', '&gt;': '>', '&amp;': '&' };
const unescapeXml = (s: string) => s.replace(/&(quot|apos|lt|gt|amp);/g, (e) => xmlEntities[e]!);

/**
 * The data records (options data included) tshark decodes from a capture, read from its PDML,
 * which keeps each enterprise element's type and its whole value (its JSON keeps neither).
 */
export async function tsharkRecords(file: string, decodeAs: string, pen: number): Promise<TsharkRecord[]> {
  const { stdout } = await run('tshark', ['-r', file, '-d', `${decodeAs},cflow`, '-T', 'pdml'], { maxBuffer: 256 * 1024 * 1024 });
  const records: TsharkRecord[] = [];
  let setId = 0;
  let current: TsharkRecord | undefined;
  for (const line of stdout.split('\n')) {
    const field = /<field name="([^"]*)"(?: showname="([^"]*)")?[^>]*? show="([^"]*)"(?: value="([^"]*)")?/.exec(line);
    if (!field) continue;
    const [, name = '', showname = '', show = '', value = ''] = field;
    if (name === 'cflow.flowset_id') {
      setId = Number(show);
      current = undefined;
    } else if (name === '' && /^Flow \d+$/.test(show)) {
      current = { setId, fields: new Map() };
      records.push(current);
    } else if (current && name === 'cflow.enterprise_private_entry') {
      const type = /\) Type (\d+):/.exec(unescapeXml(showname));
      if (type) current.fields.set(`${pen}/${type[1]}`, value);
    } else if (current && name !== '') {
      current.fields.set(name, unescapeXml(show));
    }
  }
  return records;
}

/** Every value of `key` anywhere in a JSON tree, in document order. */
export function valuesOf(tree: unknown, key: string): unknown[] {
  const out: unknown[] = [];
  const walk = (node: unknown) => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n);
    } else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === key) {
          if (Array.isArray(v)) out.push(...(v as unknown[]));
          else out.push(v);
        }
        walk(v);
      }
    }
  };
  walk(tree);
  return out;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

function nfdumpTime(ns: bigint): string {
  // nfdump prints local time "YYYY-MM-DD hh:mm:ss"; the tests run in UTC or compare via Date.
  const d = new Date(Number(ns / 1_000_000n));
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** nfdump shows each record with its addresses, ports, protocol, counters, times and direction. */
export function expectDecoded(flows: Awaited<ReturnType<typeof nfdumpFlows>>, records: FlowRecord[]): void {
  expect(flows).toHaveLength(records.length);
  const byPort = new Map(flows.map((f) => [f.sp, f]));
  for (const r of records) {
    const f = byPort.get(r.src!.port);
    expect(f, `record ${r.id}`).toBeDefined();
    expect(f).toMatchObject({
      sa: r.src!.ip,
      da: r.dst!.ip,
      sp: r.src!.port,
      dp: r.dst!.port,
      pr: r.protocol === 6 ? 'TCP' : 'UDP',
      ibyt: Number(r.bytes),
      ipkt: Number(r.packets),
      obyt: Number(r.reverseBytes),
      opkt: Number(r.reversePackets),
      dir: r.vantage === 1 ? 1 : 0,
    });
    expect(f!.ts.slice(0, 19)).toBe(nfdumpTime(r.startNs));
    expect(f!.te.slice(0, 19)).toBe(nfdumpTime(r.endNs));
  }
}


/** nfcapd's own count of sequence failures, summed over the stat records of its files (`nfdump -I`). */
export async function nfcapdSequenceFailures(dir: string): Promise<number> {
  let failures = 0;
  for (const file of readdirSync(dir).filter((f) => f.startsWith('nfcapd.'))) {
    const { stdout } = await run('nfdump', ['-r', join(dir, file), '-I']);
    const line = /^Sequence failures: (\d+)$/m.exec(stdout);
    if (!line) throw new Error(`nfdump -I printed no sequence failures for ${file}: ${stdout}`);
    failures += Number(line[1]);
  }
  return failures;
}

/** One IPFIX message's header as tshark decodes it, with the number of data records it carried. */
export interface TsharkMessage {
  srcPort: number;
  domain: number;
  sequence: number;
  /** Data records (options data included) tshark decoded in it: what its sequence number counts. */
  records: number;
}

/** The IPFIX messages of a capture (one per UDP datagram), in capture order, read from tshark's PDML. */
export async function tsharkMessages(file: string, decodeAs: string): Promise<TsharkMessage[]> {
  const { stdout } = await run('tshark', ['-r', file, '-d', `${decodeAs},cflow`, '-T', 'pdml'], { maxBuffer: 256 * 1024 * 1024 });
  return stdout
    .split('<packet>')
    .slice(1)
    .map((packet) => {
      const show = (name: string) => {
        const field = new RegExp(`<field name="${name.replace('.', '\\.')}"[^>]*? show="([^"]*)"`).exec(packet);
        if (!field) throw new Error(`tshark decoded no ${name} in a packet`);
        return Number(field[1]);
      };
      return { srcPort: show('udp.srcport'), domain: show('cflow.od_id'), sequence: show('cflow.sequence'), records: packet.match(/<field name="" show="Flow \d+"/g)?.length ?? 0 };
    });
}
