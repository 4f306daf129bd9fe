// Network fixtures for kernel-level tests: two network namespaces joined by a veth, a cgroup v2
// sub-tree to run their processes in, and a tcpdump of the veth as ground truth. Every name
// starts with a caller-chosen prefix (kappa's capture tests use `kc-`), is unique to the test
// process (names.ts: two runs at once never meet), and everything is removed by `destroy()`,
// also when a test fails half-way; what a killed run left is swept by the next one.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { sweepLeftovers, uniqueName } from './names.js';

/**
 * The environment of every process a test starts and reads: without FORCE_COLOR, which Nx sets
 * for its streamed output and which makes Node's console.log wrap a number in colour codes (a
 * child's `console.log(port)` then reads as NaN).
 */
export function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['FORCE_COLOR'];
  return env;
}

export function run(command: string, args: readonly string[], input?: string): string {
  return execFileSync(command, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], env: childEnv() });
}

/** Where cgroup v2 is mounted, from /proc/mounts. */
export function cgroup2Mount(): string {
  const line = readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2');
  const path = line?.split(' ')[1];
  if (!path) throw new Error('cgroup v2 is not mounted');
  return path;
}

/**
 * A cgroup v2 directory for test processes; `destroy` kills what is left in it and removes it.
 * Name a top-level one with uniqueName (`new TestCgroup(uniqueName('kc-socket'))`).
 */
export class TestCgroup {
  readonly path: string;
  constructor(name: string) {
    sweepLeftovers(cgroup2Mount());
    this.path = join(cgroup2Mount(), name);
    mkdirSync(this.path, { recursive: true });
  }

  child(name: string): TestCgroup {
    return new TestCgroup(join(this.path.slice(cgroup2Mount().length + 1), name));
  }

  destroy(): void {
    if (!existsSync(this.path)) return;
    for (const pid of readFileSync(join(this.path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(this.path);
        return;
      } catch {
        execFileSync('sleep', ['0.02']);
      }
    }
  }
}

/**
 * Spawns `command` inside network namespace `netns` (none: the current one) as a member of
 * `cgroup`: the shell joins the cgroup first, so every socket the command creates belongs to it.
 */
export function spawnIn(netns: string | undefined, cgroup: TestCgroup, command: string, args: readonly string[]): ChildProcess {
  const exec = netns ? `exec ip netns exec ${netns} "$@"` : 'exec "$@"';
  return spawn('sh', ['-c', `echo $$ > ${cgroup.path}/cgroup.procs && ${exec}`, 'sh', command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(),
  });
}

/** Runs to completion inside `netns` and `cgroup`; rejects with its stderr on failure. */
export function runIn(netns: string | undefined, cgroup: TestCgroup, command: string, args: readonly string[]): Promise<string> {
  const child = spawnIn(netns, cgroup, command, args);
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${err}${out}`))));
  });
}

export interface VethPairOptions {
  /** Prefix of every namespace and interface name, e.g. `kc-`. At most 6 characters. */
  prefix: string;
  /**
   * Third octet of 10.77.X.0/24 and group of fd77:X::/64. The addresses live only in the pair's
   * own namespaces, so any number of pairs (and test runs) may use the same one.
   */
  subnet: number;
  /** The namespaces (and so their kernel control sockets) are created inside this cgroup. */
  cgroup: TestCgroup;
  /** Segmentation and checksum offloads (default off: the wire shows real packets). */
  offloads?: boolean;
}

export interface NetnsEnd {
  readonly netns: string;
  readonly ifname: string;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly mac: string;
}

/**
 * Two namespaces `a` and `b` joined by a veth with only test traffic on it: no DAD, no router
 * solicitations, permanent neighbour entries (no ARP/ND), offloads off unless asked.
 */
export class VethPair {
  readonly a: NetnsEnd;
  readonly b: NetnsEnd;

  private constructor(a: NetnsEnd, b: NetnsEnd) {
    this.a = a;
    this.b = b;
  }

  static async create(options: VethPairOptions): Promise<VethPair> {
    const { prefix, subnet, cgroup } = options;
    const tag = `${prefix}${subnet}`;
    // Namespace names are machine-wide: unique per run. Interface names are created inside the
    // namespaces (never in the root one), so they may stay short and fixed.
    const name = uniqueName(tag);
    const a = { netns: `${name}-a`, ifname: `${tag}-va`, ipv4: `10.77.${subnet}.1`, ipv6: `fd77:${subnet}::1` };
    const b = { netns: `${name}-b`, ifname: `${tag}-vb`, ipv4: `10.77.${subnet}.2`, ipv6: `fd77:${subnet}::2` };
    sweepLeftovers(cgroup2Mount());
    try {
      for (const end of [a, b]) await runIn(undefined, cgroup, 'ip', ['netns', 'add', end.netns]);
      return VethPair.configure(a, b, options);
    } catch (error) {
      for (const end of [a, b]) {
        try {
          run('ip', ['netns', 'del', end.netns]);
        } catch {
          // not made
        }
      }
      throw error;
    }
  }

  private static configure(a: Omit<NetnsEnd, 'mac'>, b: Omit<NetnsEnd, 'mac'>, options: VethPairOptions): VethPair {
    run('ip', ['link', 'add', a.ifname, 'netns', a.netns, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.netns]);
    const ends: NetnsEnd[] = [];
    for (const end of [a, b]) {
      const ns = ['netns', 'exec', end.netns];
      for (const key of ['all', 'default']) {
        run('ip', [...ns, 'sysctl', '-qw', `net.ipv6.conf.${key}.accept_dad=0`, `net.ipv6.conf.${key}.router_solicitations=0`]);
      }
      run('ip', [...ns, 'sysctl', '-qw', `net.ipv6.conf.${end.ifname}.accept_dad=0`, `net.ipv6.conf.${end.ifname}.router_solicitations=0`]);
      if (!options.offloads) {
        run('ip', [...ns, 'ethtool', '-K', end.ifname, 'tso', 'off', 'gso', 'off', 'gro', 'off', 'tx', 'off', 'rx', 'off']);
      }
      run('ip', [...ns, 'ip', 'link', 'set', 'lo', 'up']);
      run('ip', [...ns, 'ip', 'addr', 'add', `${end.ipv4}/24`, 'dev', end.ifname]);
      run('ip', [...ns, 'ip', 'addr', 'add', `${end.ipv6}/64`, 'dev', end.ifname, 'nodad']);
      run('ip', [...ns, 'ip', 'link', 'set', end.ifname, 'up']);
      const mac = run('ip', [...ns, 'cat', `/sys/class/net/${end.ifname}/address`]).trim();
      ends.push({ ...end, mac });
    }
    const [endA, endB] = ends as [NetnsEnd, NetnsEnd];
    for (const [self, peer] of [[endA, endB], [endB, endA]] as const) {
      const ns = ['netns', 'exec', self.netns, 'ip'];
      run('ip', [...ns, 'neigh', 'replace', peer.ipv4, 'lladdr', peer.mac, 'dev', self.ifname, 'nud', 'permanent']);
      run('ip', [...ns, '-6', 'neigh', 'replace', peer.ipv6, 'lladdr', peer.mac, 'dev', self.ifname, 'nud', 'permanent']);
    }
    return new VethPair(endA, endB);
  }

  /** Deletes both namespaces (the veth goes with them). */
  destroy(): void {
    for (const end of [this.a, this.b]) {
      try {
        run('ip', ['netns', 'del', end.netns]);
      } catch {
        // already gone
      }
    }
  }
}

/** Reads /proc/net/snmp-style counters of a namespace with nstat (absolute values). */
export function nstat(netns: string): Record<string, number> {
  const out = run('ip', ['netns', 'exec', netns, 'nstat', '-a', '-z', '-s', '--json']);
  const parsed = JSON.parse(out) as { kernel?: Record<string, number> };
  return parsed.kernel ?? {};
}

/** A tcpdump of one interface of a namespace, written to a pcap file. */
export class PacketCapture {
  private constructor(
    private readonly child: ChildProcess,
    readonly file: string,
  ) {}

  static async start(netns: string, ifname: string, file: string): Promise<PacketCapture> {
    const child = spawn('ip', ['netns', 'exec', netns, 'tcpdump', '-i', ifname, '--immediate-mode', '-U', '-n', '-s', '128', '-w', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr?.on('data', (c: Buffer) => {
        err += c.toString();
        if (err.includes('listening on')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
    });
    return new PacketCapture(child, file);
  }

  /** Stops after a grace period: packets still in the kernel's capture ring get written. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGINT');
    await exited;
  }
}

/** One direction of one conversation in a pcap: IP bytes (as ip.len / ipv6.plen + 40) and packets. */
export interface WireCount {
  bytes: number;
  packets: number;
}

/**
 * Per-direction totals of a pcap, keyed `proto src sport dst dport` (ICMP echo: the identifier
 * as both ports, like capture does). Read with tshark, independent of kappa's parser.
 */
export function wireCounts(file: string): Map<string, WireCount> {
  const fields = ['ip.src', 'ip.dst', 'ip.proto', 'ip.len', 'ipv6.src', 'ipv6.dst', 'ipv6.nxt', 'ipv6.plen',
    'tcp.srcport', 'tcp.dstport', 'udp.srcport', 'udp.dstport', 'icmp.ident', 'icmpv6.echo.identifier'];
  const out = run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f', ...fields.flatMap((f) => ['-e', f])]);
  const counts = new Map<string, WireCount>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [src4, dst4, proto4, len4, src6, dst6, next6, plen6, tsp, tdp, usp, udp, icmpId, icmp6Id] = line.split('|');
    const v4 = Boolean(src4);
    const proto = Number(v4 ? proto4 : next6);
    const bytes = v4 ? Number(len4) : Number(plen6) + 40;
    const idText = icmpId || icmp6Id;
    const id = idText ? String(Number(idText)) : '0';
    const sport = tsp || usp || id;
    const dport = tdp || udp || id;
    const key = `${proto} ${v4 ? src4 : src6} ${sport} ${v4 ? dst4 : dst6} ${dport}`;
    const count = counts.get(key) ?? { bytes: 0, packets: 0 };
    count.bytes += bytes;
    count.packets += 1;
    counts.set(key, count);
  }
  return counts;
}
