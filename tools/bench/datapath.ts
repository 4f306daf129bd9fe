// Scenario 1 — datapath: iperf3 between two network namespaces over a veth, paired runs in
// alternating order with no agent, kappa-capture (cgroup hooks on the iperf3 processes' cgroup),
// softflowd and pmacctd (both pcap on the client's veth). Throughput, each agent's CPU per GB,
// the machine's whole CPU per GB (user+nice+system+irq+softirq from /proc/stat) minus the no-agent
// run's of the same pair, BPF ns per run against #16's goals, and kappa's byte count against
// iperf3's; then kappa_drop's ns per dropped packet over datagrams to a closed port (#21). Writes
// section `datapath`.
//   npm run bench:datapath -- [--pairs 8] [--seconds 5]      (root; after `npm run build`)
// A narrower run for one figure, written to section `datapath-focus` (`datapath-dns` with
// kappa-nodns; the full table stays):
//   npm run bench:datapath -- --agents kappa --pairs 24 [--pin]
// --rate 5G: iperf3 at a fixed rate (-b) below the link's ceiling, so the cores are not saturated
// and the whole cost per GB is CPU spent rather than throughput lost. Writes section `datapath-rate`.
// --agents: which agents beside "no agent" (kappa, kappa-nodns: kappa with --disable-hooks cgroup-skb, kappa-base: kappa with
// --base's BPF object, softflowd, pmacctd); --pin: iperf3's client on
// CPU 0 and its server on CPU 1 (-A), so the scheduler's placement stops varying between runs.
// Profile mode: only bpf_stats runs, one per BPF object per round, in alternating order, so
// variants of the programs (parts compiled out: tools/bench/datapath-variants.sh) are compared
// in the same run. Writes section `datapath-profile`.
//   npm run bench:datapath -- --objects main=bpf/.output/kappa.bpf.o,nohealth=/tmp/x.o [--rounds 5]
// A path that is a directory is another checkout (built): its kappa-capture with its own object, so
// a change to the programs and their loader is compared with the code before it in one run.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BpfObject, attachProgram } from '@kappa/ebpf-ffi';
import type { LinkAttachment } from '@kappa/ebpf-ffi';
import { TestCgroup, VethPair, run, runIn, spawnIn } from '@kappa/testing';
import { exited, median, requireBuild, sleep, stopAll, waitFor } from './lib/processes.js';
import { cpuSeconds, machineLine, repoRoot, rssBytes, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({
  options: {
    pairs: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '5' },
    objects: { type: 'string' },
    rounds: { type: 'string', default: '5' },
    agents: { type: 'string' },
    pin: { type: 'boolean', default: false },
    rate: { type: 'string' },
    base: { type: 'string' },
  },
});
const pairs = Number(values.pairs);
const seconds = Number(values.seconds);
/** iperf3's target rate (-b, e.g. 5G): below the link's ceiling, the cores are not saturated. */
const rate = values.rate;
if (rate !== undefined && !/^\d+(\.\d+)?[KMG]?$/.test(rate)) throw new Error(`--rate ${rate}: give iperf3's -b value, e.g. 5G or 800M`);
const captureBin = join(repoRoot, 'apps/capture/bin/kappa-capture.js');
requireBuild('bench:datapath', ['apps/capture/dist/main.js', 'bpf/.output/kappa.bpf.o']);

type AgentName = 'no agent' | 'kappa capture' | 'kappa capture, DNS off' | 'kappa capture, base object' | 'softflowd' | 'pmacctd';
// kappa-nodns: kappa with `--disable-hooks cgroup-skb` (no DNS copies, no receive timestamps).
// kappa-base: kappa with --base's BPF object (a .bpf.o, or a checkout with its own kappa-capture): an
// A/B of two builds' throughput in one run, paired alike.
const AGENT_FLAGS: Record<string, AgentName> = {
  kappa: 'kappa capture',
  'kappa-nodns': 'kappa capture, DNS off',
  'kappa-base': 'kappa capture, base object',
  softflowd: 'softflowd',
  pmacctd: 'pmacctd',
};
const chosen = (values.agents ?? 'kappa,softflowd,pmacctd').split(',').map((flag) => {
  const agent = AGENT_FLAGS[flag.trim()];
  if (!agent) throw new Error(`--agents takes a comma list of ${Object.keys(AGENT_FLAGS).join(', ')}: got "${flag}"`);
  return agent;
});
if (!chosen.includes('kappa capture')) throw new Error('--agents must include kappa (its count and bpf_stats are part of every run)');
if (chosen.includes('kappa capture, base object') !== (values.base !== undefined)) throw new Error('--agents kappa-base and --base OBJECT go together');
// kappa second: the tables below read it at index 1.
const agents: AgentName[] = [
  'no agent',
  'kappa capture',
  ...(['kappa capture, DNS off', 'kappa capture, base object', 'softflowd', 'pmacctd'] as const).filter((a) => chosen.includes(a)),
];
const pin = values.pin === true;
const focus = values.agents !== undefined || pin;
interface Agent {
  pid: number | undefined;
  stop(): Promise<void>;
}
interface Run {
  agent: AgentName;
  gbps: number;
  bytes: number;
  cpu: number;
  rss: number;
  received: number;
  /** The whole machine's busy CPU seconds over the iperf3 run (/proc/stat). */
  machine: number;
}

/** Busy CPU seconds of the whole machine so far: user, nice, system, irq and softirq (/proc/stat). */
function machineCpu(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq] = fields as [number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq) / 100; // USER_HZ
}

const work = mkdtempSync(join(tmpdir(), 'kbd-datapath-'));
const cgroup = new TestCgroup('kbd-datapath');
const pair = await VethPair.create({ prefix: 'kbd-', subnet: 41, cgroup, offloads: true });
const iperfPort = '5201';
/** Datagrams the drop phase sends to a closed port (#21), and the sender (one socket, 64-byte payloads). */
const REFUSED = 20_000;
const REFUSE = `const [host, count] = process.argv.slice(1); const s = require('node:dgram').createSocket('udp4'); let left = Number(count);
const next = () => (left-- > 0 ? s.send(Buffer.alloc(64), 9, host, next) : s.close()); next();`;
const statsBefore = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
const children: ChildProcess[] = [];

/**
 * The baseline of every bpf_stats run: empty programs (tools/bench/empty-skb.bpf.c) at the same
 * cgroup skb hooks, on the same skbs in the same run: `first` ones attached before kappa's, `after`
 * ones after them. The first program of a hook pays bpf_stats' cold costs (its clock page), so the
 * fair baseline of kappa's programs is the empty program after them (not first either); kappa's
 * ns minus theirs is what kappa's code costs, bpf_stats' own cost per run cancelling.
 */
const EMPTY = {
  first: { ingress: 'kbd_first_in', egress: 'kbd_first_eg' },
  after: { ingress: 'kbd_after_in', egress: 'kbd_after_eg' },
} as const;
type Position = keyof typeof EMPTY;
const hooks = ['ingress', 'egress'] as const;
const positions: Position[] = ['first', 'after'];
const emptyPins = (position: Position) => `/sys/fs/bpf/kbd-empty-${position}-${process.pid}`;
const emptyObject = (position: Position) => join(work, `empty-skb-${position}.bpf.o`);
for (const position of positions) {
  const define = position === 'first' ? ['-DKBD_FIRST'] : [];
  run('clang', ['-O2', '-g', '-target', 'bpf', ...define, '-I', join(repoRoot, 'bpf/.output'), '-c', join(repoRoot, 'tools/bench/empty-skb.bpf.c'), '-o', emptyObject(position)]);
}
function attachEmpty(position: Position): void {
  run('bpftool', ['prog', 'loadall', emptyObject(position), emptyPins(position)]);
  for (const hook of hooks) run('bpftool', ['cgroup', 'attach', cgroup.path, hook, 'pinned', join(emptyPins(position), EMPTY[position][hook]), 'multi']);
}
function detachEmpty(): void {
  for (const position of positions) {
    for (const hook of hooks) {
      try {
        run('bpftool', ['cgroup', 'detach', cgroup.path, hook, 'pinned', join(emptyPins(position), EMPTY[position][hook])]);
      } catch {
        // not attached (a failed start)
      }
    }
    rmSync(emptyPins(position), { recursive: true, force: true });
  }
}
const isEmpty = (name: string) => /^kbd_(first|after)_/.test(name);

/** The same for the socket tracepoints (tools/bench/empty-sock.bpf.c): kappa_sock_send/recv minus these. */
const EMPTY_TP = {
  first: { send: 'kbd_first_send', recv: 'kbd_first_recv' },
  after: { send: 'kbd_after_send', recv: 'kbd_after_recv' },
} as const;
const tpObject = (position: Position) => join(work, `empty-sock-${position}.bpf.o`);
for (const position of positions) {
  const define = position === 'first' ? ['-DKBD_FIRST'] : [];
  run('clang', ['-O2', '-g', '-target', 'bpf', '-D__TARGET_ARCH_x86', ...define, '-I', join(repoRoot, 'bpf/.output'), '-c', join(repoRoot, 'tools/bench/empty-sock.bpf.c'), '-o', tpObject(position)]);
}
const tracepointBaselines: { object: BpfObject; links: LinkAttachment[]; ids: number[] }[] = [];
/** Loads and attaches the empty tracepoint programs of `position`; their program ids. */
function attachEmptyTracepoints(position: Position): number[] {
  const object = BpfObject.open(tpObject(position));
  object.load();
  const names = Object.values(EMPTY_TP[position]);
  const links = names.map((name) => attachProgram(object.program(name), name));
  const ids = names.map((name) => Number(/^prog_id:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${object.program(name).fd}`, 'utf8'))?.[1]));
  tracepointBaselines.push({ object, links, ids });
  return ids;
}
function detachEmptyTracepoints(): void {
  for (const { object, links } of tracepointBaselines.splice(0)) {
    for (const link of links) link.detach();
    object.close();
  }
}

/** A 54-byte Ethernet + IPv4 + TCP (ACK) packet for BPF_PROG_TEST_RUN, to a port nobody uses here. */
const testPacket = join(work, 'tcp-ack.bin');
writeFileSync(
  testPacket,
  Buffer.from(
    '0200000000020200000000010800' + // Ethernet: to 02::02 from 02::01, IPv4
      '45000028000140004006' + '0000' + '0a0000010a000002' + // IPv4: 40 bytes, TCP, 10.0.0.1 -> 10.0.0.2 (checksum unused)
      'c35000090000000100000001' + '5010ffff' + '00000000', // TCP: 50000 -> 9, ACK
    'hex',
  ),
);
const TEST_RUN_REPEAT = 1_000_000;
/** BPF_PROG_TEST_RUN's average ns per run of a program (no bpf_stats; hot caches, test_run's own socket). */
function testRunNs(id: number): number {
  const out = run('bpftool', ['prog', 'run', 'id', String(id), 'data_in', testPacket, 'repeat', String(TEST_RUN_REPEAT)]);
  const ns = /duration \(average\): (\d+)ns/.exec(out)?.[1];
  if (ns === undefined) throw new Error(`bpftool prog run: no duration in "${out.trim()}"`);
  return Number(ns);
}

/** CPU seconds of a process and its descendants (pmacctd's plugins are child processes). */
function treeCpu(root: number): number {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  let total = 0;
  for (const pid of parents.keys()) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parents.get(p)) {
      if (p === root) {
        try {
          total += cpuSeconds(pid);
        } catch {
          // exited meanwhile
        }
        break;
      }
    }
  }
  return total;
}

function treeRss(root: number): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(entry) === root || Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === root) total += rssBytes(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** kappa's records of the iperf3 conversations, summed per (vantage, client port). */
const kappaCounts = new Map<string, { bytes: number; packets: number }>();

async function startAgent(agent: AgentName, bpfObject?: string): Promise<Agent> {
  if (agent === 'no agent') return { pid: undefined, stop: async () => undefined };
  let child: ChildProcess;
  if (agent === 'kappa capture' || agent === 'kappa capture, DNS off' || agent === 'kappa capture, base object') {
    const objectPath = agent === 'kappa capture, base object' ? values.base : bpfObject;
    const dnsOff = agent === 'kappa capture, DNS off';
    // Only kappa's own build (DNS on) feeds the count check below.
    const counted = agent === 'kappa capture';
    const checkout = objectPath !== undefined && statSync(objectPath).isDirectory();
    const object = objectPath && !checkout ? ['--bpf-object', objectPath] : [];
    const bin = checkout ? join(objectPath, 'apps/capture/bin/kappa-capture.js') : captureBin;
    child = spawn(process.execPath, [bin, '--stdout', '--cgroup', cgroup.path, '--node', 'kbd-datapath', '--interval', '1s', '--metrics-port', '0', ...object, ...(dnsOff ? ['--disable-hooks', 'cgroup-skb'] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    // The sanity check below reads kappa's own (DNS on) runs only.
    if (counted) kappaCounts.clear();
    child.stdout?.on('data', (chunk: Buffer) => {
      if (!counted) return;
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const r = JSON.parse(line) as { vantage: string; protocol: string; src: { port?: number }; dst: { port?: number }; bytes?: string; packets?: string };
        if (r.protocol !== 'IP_PROTOCOL_TCP' || String(r.dst.port) !== iperfPort) continue;
        const key = `${r.vantage} ${r.src.port}`;
        const sum = kappaCounts.get(key) ?? { bytes: 0, packets: 0 };
        sum.bytes += Number(r.bytes ?? 0);
        sum.packets += Number(r.packets ?? 0);
        kappaCounts.set(key, sum);
      }
    });
    await waitFor(child, /"msg":"capturing"/, 'kappa-capture');
  } else if (agent === 'softflowd') {
    // -d: foreground; NetFlow v5 to a port nobody reads; own control socket and pid file.
    child = spawn('ip', ['netns', 'exec', pair.a.netns, 'softflowd', '-d', '-i', pair.a.ifname, '-n', '127.0.0.1:9995', '-c', join(work, 'softflowd.ctl'), '-p', join(work, 'softflowd.pid')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await sleep(1000);
  } else {
    const config = join(work, 'pmacctd.conf');
    writeFileSync(
      config,
      [
        'daemonize: false',
        `pcap_interface: ${pair.a.ifname}`,
        `pidfile: ${join(work, 'pmacctd.pid')}`,
        'aggregate: src_host, dst_host, src_port, dst_port, proto',
        'plugins: print',
        'print_refresh_time: 10',
        `print_output_file: ${join(work, 'pmacctd.txt')}`,
        '',
      ].join('\n'),
    );
    child = spawn('ip', ['netns', 'exec', pair.a.netns, 'pmacctd', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    await sleep(1500);
  }
  if (child.exitCode !== null) throw new Error(`${agent} exited ${child.exitCode} at start`);
  children.push(child);
  return {
    pid: child.pid,
    stop: async () => {
      child.kill('SIGINT');
      await exited(child);
    },
  };
}

async function iperf(): Promise<{ gbps: number; bytes: number; received: number }> {
  const out = await runIn(pair.a.netns, cgroup, 'iperf3', ['-c', pair.b.ipv4, '-p', iperfPort, '-t', String(seconds), '-J', ...(pin ? ['-A', '0'] : []), ...(rate ? ['-b', rate] : [])]);
  const result = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number }; sum_sent: { bytes: number } } };
  return { gbps: result.end.sum_received.bits_per_second / 1e9, bytes: result.end.sum_sent.bytes, received: result.end.sum_received.bytes };
}

async function measured(agent: AgentName): Promise<Run> {
  const running = await startAgent(agent);
  const cpu0 = running.pid ? treeCpu(running.pid) : 0;
  const machine0 = machineCpu();
  const { gbps, bytes, received } = await iperf();
  const machine = machineCpu() - machine0;
  const cpu = running.pid ? treeCpu(running.pid) - cpu0 : 0;
  const rss = running.pid ? treeRss(running.pid) : 0;
  await running.stop();
  return { agent, gbps, bytes, received, cpu, rss, machine };
}

/** #16's goal for a program's ns per run: per-skb programs 80, the socket tracepoints 150. */
function goalOf(name: string): number | undefined {
  return /skb|dns_(in|e)gress/.test(name) ? 80 : /sock_(send|recv)|sendmsg|recvmsg/.test(name) ? 150 : undefined;
}

/**
 * One iperf3 run with kappa-capture (`bpfObject`, default the build's) and kernel.bpf_stats_enabled=1,
 * beside the empty baseline programs at the same hooks: runs and run time of each program that ran
 * (kappa's and the baseline's), then each skb program's BPF_PROG_TEST_RUN ns (bpf_stats off).
 */
async function bpfStatsRun(
  bpfObject?: string,
  refused = 0,
): Promise<{
  stats: { gbps: number; bytes: number };
  programs: Map<string, { runs: number; ns: number }>;
  dropPhase: Map<string, { runs: number; ns: number }>;
  testRun: Map<string, number>;
}> {
  let capture: Agent | undefined;
  try {
    attachEmpty('first');
    const tracepointIds = attachEmptyTracepoints('first');
    capture = await startAgent('kappa capture', bpfObject);
    attachEmpty('after');
    tracepointIds.push(...attachEmptyTracepoints('after'));
    const pid = capture.pid;
    const fdinfo = (fd: string) => {
      try {
        return readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      } catch {
        return ''; // closed meanwhile (a temporary fd of the start)
      }
    };
    const progIds = readdirSync(`/proc/${pid}/fdinfo`)
      .map((fd) => /^prog_id:\s+(\d+)/m.exec(fdinfo(fd))?.[1])
      .filter((id): id is string => id !== undefined)
      .map(Number);
    type Prog = { id: number; name: string; run_time_ns?: number; run_cnt?: number };
    const emptyIds = positions.flatMap((position) =>
      hooks.map((hook) => (JSON.parse(run('bpftool', ['-j', 'prog', 'show', 'pinned', join(emptyPins(position), EMPTY[position][hook])])) as Prog).id),
    );
    const mine = [...progIds, ...emptyIds, ...tracepointIds];
    const progs = () => new Map((JSON.parse(run('bpftool', ['-j', 'prog', 'show'])) as Prog[]).filter((p) => mine.includes(p.id)).map((p) => [p.id, p]));
    run('sysctl', ['-qw', 'kernel.bpf_stats_enabled=1']);
    const before = progs();
    const stats = await iperf();
    const after = progs();
    // #21: `refused` datagrams to a port nobody listens on in the server's namespace (the kernel
    // drops each with NO_SOCKET): what kappa_drop costs per dropped packet, apart from iperf3.
    if (refused > 0) await runIn(pair.a.netns, cgroup, process.execPath, ['-e', REFUSE, pair.b.ipv4, String(refused)]);
    const afterDrops = progs();
    run('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
    const between = (from: typeof before, to: typeof after) => {
      const out = new Map<string, { runs: number; ns: number }>();
      for (const p of to.values()) {
        const runs = (p.run_cnt ?? 0) - (from.get(p.id)?.run_cnt ?? 0);
        const ns = (p.run_time_ns ?? 0) - (from.get(p.id)?.run_time_ns ?? 0);
        if (runs > 0) out.set(p.name, { runs, ns });
      }
      return out;
    };
    // BPF_PROG_TEST_RUN of the skb programs and the baseline (test_run's socket has no peer, so
    // kappa's programs take the unconnected path there: parse and flow map, not socket storage).
    const testRun = new Map<string, number>();
    for (const p of after.values()) if (/skb_(in|e)gress$|^kbd_(first|after)_(in|eg)$/.test(p.name)) testRun.set(p.name, testRunNs(p.id));
    return { stats, programs: between(before, after), dropPhase: refused > 0 ? between(after, afterDrops) : new Map(), testRun };
  } finally {
    await capture?.stop();
    detachEmpty();
    detachEmptyTracepoints();
  }
}

/** kappa's socket tracepoint program minus the empty one after it at the same tracepoint, in one run's figures. */
function netTracepoint(values: ReadonlyMap<string, number>, which: 'send' | 'recv'): number | undefined {
  const kappa = values.get(`kappa_sock_${which}`);
  const empty = values.get(EMPTY_TP.after[which]);
  return kappa === undefined || empty === undefined ? undefined : kappa - empty;
}

/** kappa's skb program at `hook` minus the empty program after it at the same hook, in one run's figures. */
function net(values: ReadonlyMap<string, number>, hook: (typeof hooks)[number]): number | undefined {
  const kappa = values.get(`kappa_skb_${hook}`);
  const empty = values.get(EMPTY.after[hook]);
  return kappa === undefined || empty === undefined ? undefined : kappa - empty;
}

/**
 * Profile mode (--objects): bpf_stats runs only, one per object per round, the order alternating
 * every round. Per program the median ns per run over the rounds, per object, and each object's
 * per-packet sum (what one packet pays: every skb program at the sender's egress and the receiver's ingress).
 */
async function profile(objects: { label: string; path: string }[], rounds: number): Promise<void> {
  const results = new Map<string, Map<string, number[]>>(objects.map((o) => [o.label, new Map()]));
  const perSkb = new Map<string, number[]>(objects.map((o) => [o.label, []]));
  const add = (label: string, name: string, ns: number | undefined) => {
    if (ns === undefined) return;
    const mine = results.get(label)!;
    mine.set(name, [...(mine.get(name) ?? []), ns]);
  };
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? objects : [...objects].reverse();
    for (const object of order) {
      const { stats, programs, testRun } = await bpfStatsRun(object.path);
      let skb = 0;
      const perRun = new Map([...programs].map(([name, p]) => [name, p.ns / p.runs]));
      for (const [name, ns] of perRun) {
        add(object.label, name, ns);
        if (/skb_(in|e)gress|dns_(in|e)gress/.test(name)) skb += ns; // egress at the sender + ingress at the receiver
      }
      for (const hook of hooks) {
        add(object.label, `net ${hook}`, net(perRun, hook));
        add(object.label, `test_run ${hook}`, net(testRun, hook));
      }
      for (const which of ['send', 'recv'] as const) add(object.label, `net ${which}`, netTracepoint(perRun, which));
      perSkb.get(object.label)!.push(skb);
      console.error(
        `round ${round + 1}: ${object.label}: ${fixed(stats.gbps)} Gbit/s, ${[...perRun].filter(([n]) => /skb|dns_(in|e)/.test(n) || isEmpty(n)).map(([n, ns]) => `${n} ${Math.round(ns)} ns`).join(', ')}; ` +
          `test_run ${[...testRun].map(([n, ns]) => `${n} ${ns} ns`).join(', ')}`,
      );
    }
  }
  const cell = (label: string, name: string) => {
    const xs = results.get(label)!.get(name);
    return xs ? Math.round(median(xs)) : '—';
  };
  const names = [...new Set([...results.values()].flatMap((m) => [...m.keys()]))].filter((n) => goalOf(n) !== undefined);
  const rows = names.map((name) => [name, ...objects.map((o) => cell(o.label, name))]);
  for (const position of positions)
    for (const hook of hooks)
      rows.push([`${EMPTY[position][hook]}: an empty program ${position === 'first' ? 'before' : 'after'} kappa's at the same hook, same run`, ...objects.map((o) => cell(o.label, EMPTY[position][hook]))]);
  for (const hook of hooks) rows.push([`**kappa_skb_${hook} minus the empty program after it** (median of per-run differences)`, ...objects.map((o) => cell(o.label, `net ${hook}`))]);
  for (const hook of hooks) rows.push([`BPF_PROG_TEST_RUN: kappa_skb_${hook} minus the empty program (unconnected path)`, ...objects.map((o) => cell(o.label, `test_run ${hook}`))]);
  for (const position of positions)
    for (const which of ['send', 'recv'] as const)
      rows.push([`${EMPTY_TP[position][which]}: an empty program ${position === 'first' ? 'before' : 'after'} kappa's at the same tracepoint`, ...objects.map((o) => cell(o.label, EMPTY_TP[position][which]))]);
  for (const which of ['send', 'recv'] as const)
    rows.push([`**kappa_sock_${which} minus the empty program after it**`, ...objects.map((o) => cell(o.label, `net ${which}`))]);
  rows.push(['one packet: egress at the sender + ingress at the receiver (counting and DNS programs)', ...objects.map((o) => Math.round(median(perSkb.get(o.label)!)))]);
  const markdown = [
    `bpf_stats ns per run, median of ${rounds} rounds of ${seconds} s (iperf3, one TCP stream, offloads on); objects in alternating order every round; empty programs at the same hooks in every run (the baseline); BPF_PROG_TEST_RUN ${TEST_RUN_REPEAT.toLocaleString('en-US')} repeats of a 54-byte TCP packet after each run.`,
    '',
    table(['program', ...objects.map((o) => `${o.label}, ns`)], rows),
    '',
    `Objects: ${objects.map((o) => `${o.label} = ${o.path}`).join('; ')}.`,
    '',
    machineLine(),
  ].join('\n');
  console.log(markdown);
  writeSection('datapath-profile', markdown);
}

const fixed = (x: number, digits = 2) => x.toFixed(digits);

try {
  const server = spawnIn(pair.b.netns, cgroup, 'iperf3', ['-s', '--forceflush', '-B', pair.b.ipv4, '-p', iperfPort, ...(pin ? ['-A', '1'] : [])]);
  children.push(server);
  await waitFor(server, /Server listening/, 'iperf3 server');
  const root = run('bpftool', ['-j', 'cgroup', 'show', readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2')!.split(' ')[1]!]);
  const foreign = (JSON.parse(root.trim() || '[]') as unknown[]).length;
  if (foreign > 0) console.log(`note: ${foreign} BPF program(s) of someone else are attached at the cgroup v2 root; they run in every configuration alike.`);

  if (values.objects !== undefined) {
    const objects = values.objects.split(',').map((entry) => {
      const [label, path] = entry.split('=');
      if (!label || !path) throw new Error(`--objects takes label=path,label=path: got "${entry}"`);
      return { label, path };
    });
    await profile(objects, Number(values.rounds));
  } else {
    const runs: Run[][] = [];
    for (let i = 0; i < pairs; i++) {
      // Alternate the order, so drift on the shared machine hits every agent alike.
      const order = i % 2 === 0 ? agents : [...agents].reverse();
      const round: Run[] = [];
      for (const agent of order) {
        const r = await measured(agent);
        round.push(r);
        console.error(`pair ${i + 1}: ${agent}: ${fixed(r.gbps)} Gbit/s, agent CPU ${fixed(r.cpu)} s`);
      }
      runs.push(agents.map((a) => round.find((r) => r.agent === a)!));
    }

    // Sanity: what kappa counted on the iperf3 data connection (the last kappa run) against iperf3.
    const lastKappa = runs.at(-1)!.find((r) => r.agent === 'kappa capture')!;
    const byClientPort = [...kappaCounts.entries()].filter(([k]) => k.startsWith('VANTAGE_SRC'));
    const [dataKey, data] = byClientPort.sort((x, y) => y[1].bytes - x[1].bytes)[0] ?? ['', { bytes: 0, packets: 0 }];
    const atServer = kappaCounts.get(dataKey.replace('VANTAGE_SRC', 'VANTAGE_DST')) ?? { bytes: 0, packets: 0 };
    // IPv4 20 + TCP 20 + timestamps 12 bytes of headers per segment; SYN and FIN carry a few more.
    const payload = data.bytes - 52 * data.packets;
    const sanity =
      `kappa's count, last kappa run, iperf3 data connection client → server: ${data.bytes} IP bytes in ${data.packets} packets at the client ` +
      `(${atServer.bytes} bytes / ${atServer.packets} packets at the server); minus 52 header bytes per packet = ${payload} payload bytes; ` +
      `iperf3 sent ${lastKappa.bytes} and received ${lastKappa.received} bytes: kappa − sent = ${payload - lastKappa.bytes} (${fixed(((payload - lastKappa.bytes) / lastKappa.bytes) * 100, 3)} %), ` +
      `kappa − received = ${payload - lastKappa.received}.`;

    // BPF ns per run: bpf_stats has a cost of its own, so it gets its own run with kappa.
    const { stats, programs, dropPhase, testRun } = await bpfStatsRun(undefined, REFUSED);
    const dropRows = [...dropPhase].filter(([name]) => /drop|skb|dns/.test(name)).map(([name, p]) => [name, p.runs.toLocaleString('en-US'), Math.round(p.ns / p.runs)]);
    let bpfNs = 0;
    const perRunOf = new Map([...programs].map(([name, p]) => [name, p.ns / p.runs]));
    const progRows = [...programs].map(([name, p]) => {
      const baseline = isEmpty(name);
      if (!baseline) bpfNs += p.ns;
      const perRun = Math.round(p.ns / p.runs);
      const hook = hooks.find((h) => name === `kappa_skb_${h}`);
      const which = (['send', 'recv'] as const).find((w) => name === `kappa_sock_${w}`);
      const netOf = hook !== undefined ? net(perRunOf, hook) : which !== undefined ? netTracepoint(perRunOf, which) : undefined;
      const netNs = netOf === undefined ? undefined : Math.round(netOf);
      const goal = goalOf(name);
      return [
        baseline ? `${name} (empty, ${name.startsWith('kbd_first') ? 'before' : 'after'} kappa's)` : name,
        p.runs.toLocaleString('en-US'),
        perRun,
        netNs ?? '—',
        testRun.has(name) ? testRun.get(name)! : '—',
        goal === undefined
          ? '—'
          : netNs === undefined
            ? `≤ ${goal}: ${perRun <= goal ? 'met' : 'NOT met'} (bpf_stats, its own cost included)`
            : `≤ ${goal}: ${netNs <= goal ? 'met' : 'NOT met'} net; by bpf_stats alone ${perRun <= goal ? 'met' : 'NOT met'}`,
      ];
    });

    const baseline = runs.map((r) => r[0]!.gbps);
    const summary = agents.map((agent, a) => {
      const mine = runs.map((r) => r[a]!);
      const perGb = mine.map((r) => r.cpu / (r.bytes / 1e9));
      const core = mine.map((r) => (r.cpu / seconds) * 100);
      return [
        agent,
        fixed(median(mine.map((r) => r.gbps))),
        fixed(median(mine.map((r, i) => r.gbps / baseline[i]!)), 3),
        agent === 'no agent' ? '—' : fixed(median(perGb), 4),
        agent === 'no agent' ? '—' : fixed(median(core), 1),
        agent === 'no agent' ? '—' : fixed(Math.max(...mine.map((r) => r.rss)) / 2 ** 20, 0),
      ];
    });
    const kappaCpuPerGb = median(runs.map((r) => r[1]!.cpu / (r[1]!.bytes / 1e9)));
    // Each agent's whole cost: the machine's busy CPU per GB moved minus the no-agent run's, per pair.
    const wholeCost = agents.map((_, a) => median(runs.map((r) => r[a]!.machine / (r[a]!.bytes / 1e9) - r[0]!.machine / (r[0]!.bytes / 1e9))));
    const costRows = agents.slice(1).map((agent, i) => [
      agent,
      fixed(median(runs.map((r) => r[i + 1]!.machine / (r[i + 1]!.bytes / 1e9))), 4),
      fixed(wholeCost[i + 1]!, 4),
      agent === 'kappa capture' ? '1' : wholeCost[1]! > 0 && wholeCost[i + 1]! > 0 ? fixed(wholeCost[i + 1]! / wholeCost[1]!, 1) : 'n/a (a difference ≤ 0: below this run\'s noise)',
    ]);
    const bpfPerGb = bpfNs / 1e9 / (stats.bytes / 1e9);
    // How far one pair's ratio strays: the spread that a median of this many pairs still carries.
    const spread = agents.slice(1).map((agent, i) => {
      const sorted = runs.map((r) => r[i + 1]!.gbps / r[0]!.gbps).sort((x, y) => x - y);
      const q = (f: number) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))]!;
      return `${agent} ${fixed(sorted[0]!, 3)}–${fixed(sorted.at(-1)!, 3)} (quartiles ${fixed(q(0.25), 3)} / ${fixed(q(0.75), 3)})`;
    });
    const noAgent = runs.map((r) => r[0]!.gbps);
    const markdown = [
      `${pairs} paired runs of ${seconds} s, one TCP stream${rate ? ` at a fixed ${rate}bit/s (iperf3 -b; the cores are not saturated, so the whole cost is CPU spent, not throughput lost)` : ''}, offloads on; order alternates every pair${pin ? '; iperf3 pinned: client on CPU 0, server on CPU 1 (-A)' : ''}. Throughput ratio = median over pairs of (agent run / no-agent run of the same pair).`,
      '',
      table(['agent', 'throughput, Gbit/s (median)', '× no agent (paired median)', 'agent CPU-s per GB', 'agent CPU, % of a core', 'agent RSS, MiB'], summary),
      '',
      `One pair's ratio ranged: ${spread.join('; ')}. No agent alone: ${fixed(Math.min(...noAgent))}–${fixed(Math.max(...noAgent))} Gbit/s.`,
      '',
      table(
        ['pair', ...agents.map((a) => `${a}, Gbit/s`)],
        runs.map((r, i) => [i + 1, ...r.map((x) => fixed(x.gbps))]),
      ),
      '',
      `Whole cost, counted alike for every agent: the machine's busy CPU (user+nice+system+irq+softirq, /proc/stat) over the iperf3 run per GB moved, minus the no-agent run's of the same pair (median over pairs; no-agent: ${fixed(median(runs.map((r) => r[0]!.machine / (r[0]!.bytes / 1e9))), 4)} CPU-s/GB). Other work on the machine lands in every run alike; on a loaded machine it dominates. Goal (#16): kappa ≥ 10× less than softflowd and pmacctd.`,
      '',
      table(['agent', 'machine CPU-s per GB', 'minus no agent, CPU-s per GB', '× kappa'], costRows),
      '',
      `kappa's BPF programs in the bpf_stats run (${fixed(stats.gbps)} Gbit/s): ${fixed(bpfPerGb, 4)} CPU-s per GB in the kernel, on top of the process's ${fixed(kappaCpuPerGb, 4)}.`,
      '',
      `ns per run by bpf_stats; "minus the empty program": kappa's program minus the empty one attached after it at the same hook in the same run (bpf_stats' own cost per run and a program dispatch taken out; an empty program attached first at a hook measures more, it pays bpf_stats' cold clock page); BPF_PROG_TEST_RUN: ${TEST_RUN_REPEAT.toLocaleString('en-US')} repeats of a 54-byte TCP packet, no bpf_stats, hot caches, test_run's own socket (which has no peer: kappa takes the unconnected path there, not the socket storage).`,
      '',
      table(['program', 'runs', 'ns per run', 'minus the empty program, ns', 'BPF_PROG_TEST_RUN, ns', 'goal (#16)'], progRows),
      '',
      `Then ${REFUSED.toLocaleString('en-US')} datagrams to a closed port of the server's namespace, every one dropped by the kernel (NO_SOCKET; #21's kappa_drop):`,
      '',
      table(['program', 'runs', 'ns per run'], dropRows),
      '',
      sanity,
      '',
      machineLine(),
    ].join('\n');
    console.log(markdown);
    const section = rate ? 'datapath-rate' : agents.includes('kappa capture, DNS off') ? 'datapath-dns' : agents.includes('kappa capture, base object') ? 'datapath-ab' : focus ? 'datapath-focus' : 'datapath';
    writeSection(section, markdown);
  }
} finally {
  await stopAll(children);
  detachEmpty();
  detachEmptyTracepoints();
  run('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
  pair.destroy();
  cgroup.destroy();
  rmSync(work, { recursive: true, force: true });
}
