// The bounded caches: (pid, start time) process cache, the cgroup tree on a real cgroup v2 mount,
// the CRI name lookups against a real gRPC server on a unix socket, and the PID namespace check.
import { rmdirSync } from 'node:fs';
import { createLogger } from '@kappa/observability';
import { afterAll, describe, expect, it } from 'vitest';
import { CgroupTree } from '../src/cgroup-tree.js';
import { CriContainerNames } from '../src/cri.js';
import { INITIAL_PID_NAMESPACE, checkPidNamespace } from '../src/host-pid.js';
import { ProcessCache } from '../src/process-cache.js';
import { startCriServer } from './cri-server.js';
import { CgroupFixture, hex64, waitFor } from './helpers.js';

const fixture = new CgroupFixture('ke-cache');
afterAll(() => fixture.cleanup());

describe('ProcessCache', () => {
  it('keys by pid and start time, so a reused pid misses', () => {
    const cache = new ProcessCache<string>();
    cache.set(100, 5000n, 'old');
    expect(cache.get(100, 5000n)).toBe('old');
    expect(cache.get(100, 9000n)).toBeUndefined();
    expect([cache.hits, cache.misses]).toEqual([1, 1]);
  });

  it('drops the least recently used entry beyond its size', () => {
    const cache = new ProcessCache<number>({ maxEntries: 2 });
    cache.set(1, 1n, 1);
    cache.set(2, 2n, 2);
    cache.get(1, 1n);
    cache.set(3, 3n, 3);
    expect(cache.get(2, 2n)).toBeUndefined();
    expect(cache.get(1, 1n)).toBe(1);
    expect(cache.size).toBe(2);
  });

  it('forgets entries older than its TTL', () => {
    let now = 0;
    const cache = new ProcessCache<number>({ ttlMs: 1000, now: () => now });
    cache.set(1, 1n, 1);
    now = 999;
    expect(cache.get(1, 1n)).toBe(1);
    now = 2000;
    expect(cache.get(1, 1n)).toBeUndefined();
  });
});

describe('CgroupTree on the real cgroup v2 mount', () => {
  it('resolves a cgroup created after the last walk by walking again', () => {
    const tree = new CgroupTree({ mount: fixture.mount });
    tree.rescan();
    const created = fixture.make(`docker-${hex64()}.scope`);
    expect(tree.lookup(created.id)).toBe(created.path);
    expect(tree.lookup(1n)).toBe('/');
    expect(tree.stats.rescans).toBe(2);
  });

  it('keeps answering for a removed cgroup until retainRemovedMs, then forgets it', () => {
    let now = 0;
    const tree = new CgroupTree({ mount: fixture.mount, retainRemovedMs: 10_000, minRescanIntervalMs: 0, now: () => now });
    const removed = fixture.make(`crio-${hex64()}.scope`);
    tree.rescan();
    rmdirSync(removed.dir);
    now = 5000;
    tree.rescan();
    expect(tree.lookup(removed.id)).toBe(removed.path);
    now = 20_000;
    tree.rescan();
    expect(tree.lookup(removed.id)).toBeUndefined();
  });

  it('does not walk again for an unknown old id more than once per interval', () => {
    let now = 0;
    const tree = new CgroupTree({ mount: fixture.mount, minRescanIntervalMs: 1000, now: () => now });
    tree.rescan();
    const before = tree.stats.rescans;
    for (let i = 0; i < 50; i++) expect(tree.lookup(2n)).toBeUndefined();
    expect(tree.stats.rescans - before).toBeLessThanOrEqual(1);
    now = 5000;
    tree.lookup(2n);
    expect(tree.stats.rescans - before).toBeLessThanOrEqual(2);
  });

  it('stays within maxEntries', () => {
    for (let i = 0; i < 6; i++) fixture.make(`bound-${i}.slice`);
    const tree = new CgroupTree({ mount: fixture.mount, maxEntries: 5 });
    tree.rescan();
    expect(tree.size).toBeLessThanOrEqual(5);
    expect(tree.stats.truncated).toBe(true);
  });
});

describe('CriContainerNames', () => {
  const lines: string[] = [];
  const logger = createLogger('ke-test', 'info');
  logger.info = ((obj: unknown, msg?: string) => void lines.push(`${msg ?? ''} ${JSON.stringify(obj)}`)) as typeof logger.info;
  logger.warn = logger.info;

  it('names containers from ListContainers over a unix socket and lists again for an unknown id', async () => {
    const cri = await startCriServer('cri-o');
    try {
      const first = hex64();
      cri.containers.set(first, 'web');
      const names = new CriContainerNames({ sockets: ['/nonexistent/ke.sock', cri.socket], logger, minRefreshIntervalMs: 0 });
      expect(await names.connect()).toBe(true);
      expect(names.runtime).toBe('cri-o');
      await names.refreshIfStale();
      expect(names.name(first)).toBe('web');
      const later = hex64();
      cri.containers.set(later, 'job');
      expect(names.name(later)).toBeUndefined();
      await names.refreshIfStale();
      expect(names.name(later)).toBe('job');
      expect(cri.listCalls).toBe(2);
      names.close();
    } finally {
      await cri.stop();
    }
  });

  it('says in one line that no socket answered and leaves names empty', async () => {
    lines.length = 0;
    const names = new CriContainerNames({ sockets: ['/nonexistent/a.sock', '/nonexistent/b.sock'], logger });
    expect(await names.connect()).toBe(false);
    await names.refreshIfStale();
    expect(names.name(hex64())).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('no CRI runtime socket reachable');
  });

  it('finds a runtime that starts later, without saying again that none answered', async () => {
    lines.length = 0;
    const cri = await startCriServer('containerd');
    try {
      const id = hex64();
      cri.containers.set(id, 'late');
      const names = new CriContainerNames({ sockets: [`${cri.socket}.notyet`, cri.socket], logger, reconnectIntervalMs: 0, minRefreshIntervalMs: 0 });
      const absent = new CriContainerNames({ sockets: [`${cri.socket}.notyet`], logger, reconnectIntervalMs: 0 });
      expect(await absent.connect()).toBe(false);
      absent.reconnectIfDue();
      await waitFor('the second try', () => (lines.length >= 1 ? true : undefined));
      expect(lines.filter((l) => l.includes('no CRI runtime socket reachable'))).toHaveLength(1);
      names.reconnectIfDue();
      await waitFor('the late runtime', () => (names.connected ? true : undefined));
      await names.refreshIfStale();
      expect(names.name(id)).toBe('late');
      names.close();
    } finally {
      await cri.stop();
    }
  });
});

describe('checkPidNamespace', () => {
  it('recognises the host PID namespace of this machine', () => {
    const view = checkPidNamespace('/proc');
    expect(view.hostPid).toBe(true);
    expect(view.message).toContain(INITIAL_PID_NAMESPACE);
  });
});
