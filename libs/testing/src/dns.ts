// A real DNS resolver for tests: Debian's dnsmasq, serving a small zone (A, AAAA and CNAME
// records, NXDOMAIN for any other name in it) on port 53 of addresses in a test namespace, and
// the namespace's resolv.conf pointing a client at it (`ip netns exec` puts
// /etc/netns/<netns>/resolv.conf in place of /etc/resolv.conf, so glibc's resolver reads it).
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { isLeftover } from './names.js';
import { spawnIn } from './netns.js';
import type { TestCgroup } from './netns.js';

export interface ZoneHost {
  /** A name with its addresses (IPv4 and IPv6 together). */
  name: string;
  addresses: readonly string[];
}

export interface ZoneAlias {
  /** alias → target: a CNAME (the target may itself be an alias). */
  name: string;
  target: string;
}

export interface DnsServerOptions {
  netns: string;
  /** The resolver's process (and its sockets) belong to this cgroup. */
  cgroup: TestCgroup;
  /** Addresses of the namespace it answers on, port 53. */
  listen: readonly string[];
  /** The zone it is authoritative for: any other name in it is NXDOMAIN. */
  zone: string;
  hosts: readonly ZoneHost[];
  aliases?: readonly ZoneAlias[];
  /** TTL of its answers, seconds. */
  ttl?: number;
}

export class DnsServer {
  private output = '';

  private constructor(private readonly child: ChildProcess) {
    child.stderr?.on('data', (c: Buffer) => (this.output += c.toString()));
  }

  /** What dnsmasq logged (each query and answer), for failure messages. */
  get log(): string {
    return this.output;
  }

  static async start(options: DnsServerOptions): Promise<DnsServer> {
    const args = [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--bind-interfaces',
      ...options.listen.map((address) => `--listen-address=${address}`),
      '--port=53',
      '--user=root',
      '--group=root',
      '--pid-file=',
      '--log-facility=-',
      '--log-queries=extra',
      `--local-ttl=${options.ttl ?? 300}`,
      `--local=/${options.zone}/`,
      ...options.hosts.map((host) => `--host-record=${host.name},${host.addresses.join(',')}`),
      ...(options.aliases ?? []).map((alias) => `--cname=${alias.name},${alias.target}`),
    ];
    const child = spawnIn(options.netns, options.cgroup, 'dnsmasq', args);
    const server = new DnsServer(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dnsmasq did not start in 10 s:\n${server.output}`)), 10_000);
      child.stderr?.on('data', () => {
        if (server.output.includes('started, version')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (error) => reject(new Error(`cannot start dnsmasq (run tools/install-deps.sh): ${error.message}`)));
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`dnsmasq exited ${code} before it started:\n${server.output}`));
      });
    });
    return server;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}

const NETNS_ETC = '/etc/netns';

/**
 * Writes /etc/netns/<netns>/resolv.conf (e.g. ['nameserver 10.77.1.2', 'options use-vc']) for
 * processes started with `ip netns exec <netns>`; the returned function removes it. Folders of
 * test runs that died are swept first.
 */
export function resolvConf(netns: string, lines: readonly string[]): () => void {
  if (existsSync(NETNS_ETC)) {
    for (const name of readdirSync(NETNS_ETC)) if (isLeftover(name)) rmSync(join(NETNS_ETC, name), { recursive: true, force: true });
  }
  const dir = join(NETNS_ETC, netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'resolv.conf'), `${lines.join('\n')}\n`);
  return () => rmSync(dir, { recursive: true, force: true });
}
