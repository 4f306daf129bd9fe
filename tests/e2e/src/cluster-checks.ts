// Checks shared by the tests on the cluster topology (cluster-faults, cluster-rolling): what the
// exporter replicas wrote, counted against tcpdump, and what the nats-servers say of the stream.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { expect } from 'vitest';
import { DLQ_STREAM } from '@kappa/bus';
import { run } from '@kappa/testing';
import { readPackets } from './ground-truth.js';
import { logTail, workspaceRoot } from './services.js';
import { isScenarioRecord, metric, metricIn, until } from './pipeline.js';
import type { ExportedRecord, Scenario } from './pipeline.js';

/** startScenario's options for the cluster topology: 3 nats-servers (streams R3), a Redis Cluster, two replicas of each cluster stage. */
export const CLUSTER_TOPOLOGY = {
  natsCluster: 3,
  redisCluster: true,
  replicas: true,
  common: ['--stream-replicas=3'],
  capture: ['--interval=1s'],
  joiner: ['--interval=1s', '--join-external', '--lease-ttl=5s'],
};

export type Exported = ExportedRecord & { id: string; bytes?: string };
interface StreamDetail {
  name: string;
  state?: { messages: number; first_seq: number; last_seq: number };
  cluster?: { leader?: string; replicas?: { name: string; current: boolean; lag?: number }[] };
  consumer_detail?: {
    name: string;
    cluster?: { leader?: string };
    num_pending: number;
    num_ack_pending: number;
    num_waiting: number;
    delivered?: { stream_seq: number };
    ack_floor?: { stream_seq: number };
  }[];
}

/** Every record of the scenario's traffic, over every exporter replica's file. */
export function exported(s: Scenario): Exported[] {
  const isFlood = isScenarioRecord(s);
  return s.jsonlFiles.flatMap((file) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Exported) : [])).filter(isFlood);
}
/** Whether the redis-server on `port` answers `command` with `expected` (false: not answering). */
export const redisAnswers = (port: number, command: string, expected: RegExp): boolean => {
  try {
    return expected.test(run('redis-cli', ['-p', String(port), ...command.split(' ')]));
  } catch {
    return false;
  }
};
export const conversations = (records: Exported[]) => new Set(records.map((r) => `${r.src.port} ${r.dst.port} ${r.startNs}`)).size;

/** What each nats-server says of KAPPA_FLOWS and its consumers (/jsz): for a failure's message. */
export async function streamStates(s: Scenario): Promise<string> {
  const lines: string[] = [];
  for (const [i, server] of s.natsServers.entries()) {
    const jsz = (await fetch(`${server.monitorUrl}/jsz?consumers=true&config=false`)
      .then((r) => r.json())
      .catch((e: Error) => ({ error: e.message }))) as { error?: string; server_name?: string; account_details?: { stream_detail?: StreamDetail[] }[] };
    if (jsz.error) {
      lines.push(`nats-server ${i}: ${jsz.error}`);
      continue;
    }
    for (const stream of (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []).filter((d) => d.name === 'KAPPA_FLOWS')) {
      lines.push(`nats-server ${i} (${jsz.server_name}): KAPPA_FLOWS msgs ${stream.state?.messages} seq ${stream.state?.first_seq}..${stream.state?.last_seq}, leader ${stream.cluster?.leader}, replicas ${JSON.stringify(stream.cluster?.replicas?.map((r) => [r.name, r.current, r.lag]))}`);
      for (const c of stream.consumer_detail ?? []) {
        lines.push(`  ${c.name}: leader ${c.cluster?.leader} pending ${c.num_pending} ack_pending ${c.num_ack_pending} waiting ${c.num_waiting} delivered ${c.delivered?.stream_seq} ack_floor ${c.ack_floor?.stream_seq}`);
      }
    }
  }
  return lines.join('\n');
}

/** The records against tcpdump's capture of the node's link: what both tests print, then assert. */
export function tally(s: Scenario, records: Exported[], pcap: string) {
  const ids = new Map<string, number>();
  for (const r of records) ids.set(r.id, (ids.get(r.id) ?? 0) + 1);
  const onWire = readPackets(pcap).filter((pk) => pk.dst === s.silentPeer);
  return {
    twice: [...ids].filter(([, n]) => n > 1),
    packets: records.reduce((n, r) => n + Number(r.packets ?? 0), 0),
    bytes: records.reduce((n, r) => n + Number(r.bytes ?? 0), 0),
    wirePackets: onWire.length,
    wireBytes: onWire.reduce((n, pk) => n + pk.ipBytes, 0),
  };
}
export const describeTally = (records: Exported[], t: ReturnType<typeof tally>) =>
  `exported ${records.length} records (${conversations(records)} conversations, ${t.twice.length} ids twice), ${t.packets} packets / ${t.bytes} bytes vs tcpdump ${t.wirePackets} / ${t.wireBytes}`;
/** Every conversation exported exactly once, with the packets and bytes the wire carried. */
export function expectExactlyOnce(records: Exported[], truth: number, t: ReturnType<typeof tally>) {
  expect(t.twice).toEqual([]);
  expect(records.length).toBe(truth);
  expect(conversations(records)).toBe(truth);
  expect(t.packets).toBe(truth);
  expect(t.wirePackets).toBe(truth);
  expect(t.bytes).toBe(t.wireBytes);
}

/** The server name a nats-server logged at start. */
export function natsServerName(log: string): string | undefined {
  return /Server name:\s+(\S+)/.exec(log)?.[1] ?? /Name:\s+(\S+)/.exec(log)?.[1];
}

/**
 * Waits until every conversation sent so far (`sent`) is exported over the replicas' files; on a
 * timeout the error says how many were, what capture published, each server's view of the stream
 * and its consumers, and the last log lines of every service and replica.
 */
export async function allExported(s: Scenario, label: string, sent: number, timeoutMs = 90_000): Promise<void> {
  const p = s.pipeline;
  try {
    await until(`${label}: the ${sent} conversations sent so far exported`, () => (conversations(exported(s)) >= sent ? true : undefined), timeoutMs);
  } catch (error) {
    const bus = async (name: string) => metric(p, 'capture', name).catch(() => NaN);
    const capture = `capture: published ${await bus('kappa_bus_published_batches_total')}, duplicates ${await bus('kappa_bus_duplicate_batches_total')}, publish failures ${await bus('kappa_bus_publish_failures_total')}`;
    const logs = [...Object.values(p.services), ...Object.values(s.replicas)].map((service) => `--- ${service.name}\n${logTail(service, 12)}`).join('\n');
    throw new Error(`${(error as Error).message}: ${conversations(exported(s))} exported\n${capture}\n${await deadLetters(s, label)}\n${await streamStates(s)}\n${logs}`, { cause: error });
  }
}

/**
 * What the dead-letter stream holds, one line each; the messages themselves are kept under
 * .test-results/ (bytes and headers) for whoever reads the failure.
 */
async function deadLetters(s: Scenario, label: string): Promise<string> {
  const nc = await connect({ servers: s.natsServers.map((n) => n.url), timeout: 5000 }).catch(() => undefined);
  if (!nc) return `${DLQ_STREAM}: no server answered`;
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(DLQ_STREAM);
    const lines = [`${DLQ_STREAM}: ${info.state.messages} messages`];
    const dir = join(workspaceRoot, '.test-results', `dlq-${label.replace(/[^A-Za-z0-9]+/g, '-')}-${Date.now()}`);
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(DLQ_STREAM, { seq }).catch(() => undefined);
      if (!m) continue;
      mkdirSync(dir, { recursive: true });
      const headers = Object.fromEntries([...(m.header?.keys() ?? [])].map((k) => [k, m.header!.get(k)]));
      writeFileSync(join(dir, `${seq}.bin`), m.data);
      writeFileSync(join(dir, `${seq}.json`), JSON.stringify({ subject: m.subject, headers }, null, 1));
      lines.push(`  ${seq} ${m.subject} ${m.data.length} bytes ${JSON.stringify(headers)} (kept in ${dir})`);
    }
    return lines.join('\n');
  } catch (error) {
    return `${DLQ_STREAM}: ${(error as Error).message}`;
  } finally {
    await nc.close();
  }
}

function parseLogLine(line: string): { time?: number; level?: number; msg?: string } | undefined {
  try {
    return line.startsWith('{') ? (JSON.parse(line) as { time?: number; level?: number; msg?: string }) : undefined;
  } catch {
    return undefined; // a line cut by a kill
  }
}

/**
 * What happened after a fault, for whoever reads a slow takeover (`KAPPA_TIMELINE=1 npm run
 * test:cluster-faults`): every stage's bus counters sampled every 200 ms (which stage moved again
 * when), the conversations exported, the nats-servers' leader elections and the services'
 * warnings, in ms after `start()`. `stop()` returns the lines in time order.
 */
export function faultTimeline(s: Scenario): { stop(): Promise<string> } {
  const t0 = Date.now();
  const sent0 = s.datagramsSent();
  const lines: [number, string][] = [];
  const last = new Map<string, number>();
  const note = (key: string, value: number, line: string) => {
    if (last.has(key) && last.get(key) !== value) lines.push([Date.now() - t0, `${line} ${last.get(key)} -> ${value}`]);
    last.set(key, value);
  };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      for (const [key, port] of Object.entries(s.pipeline.metricsPorts)) {
        const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '');
        for (const name of ['published_batches', 'consumed_batches', 'publish_failures', 'handler_failures', 'held_batches']) {
          note(`${key} ${name}`, metricIn(text, `kappa_bus_${name}_total`), `${key} ${name}`);
        }
      }
      note('exported', conversations(exported(s)), `exported conversations (sent since: ${s.datagramsSent() - sent0})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    async stop() {
      sampling = false;
      await sampler;
      const end = Date.now();
      for (const n of s.natsServers) {
        for (const line of n.process.log.split('\n')) {
          // nats-server's own clock, local time (UTC on the test machines).
          const m = /(\d{4})\/(\d\d)\/(\d\d) (\d\d:\d\d:\d\d\.\d{3})\d* \[\w+\] (.*leader.*)$/.exec(line);
          const at = m ? Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}Z`) : NaN;
          if (m && at >= t0 && at <= end) lines.push([at - t0, `${natsServerName(n.process.log)} ${m[5]}`]);
        }
      }
      for (const service of [...Object.values(s.pipeline.services), ...Object.values(s.replicas)]) {
        for (const line of existsSync(service.logFile) ? readFileSync(service.logFile, 'utf8').split('\n') : []) {
          const entry = parseLogLine(line);
          if (entry?.time && entry.time >= t0 && entry.time <= end && (entry.level ?? 0) >= 40) lines.push([entry.time - t0, `${service.name}: ${entry.msg ?? ''}`]);
        }
      }
      return lines
        .sort((a, b) => a[0] - b[0])
        .map(([ms, line]) => `${String(ms).padStart(6)} ms  ${line}`)
        .join('\n');
    },
  };
}
