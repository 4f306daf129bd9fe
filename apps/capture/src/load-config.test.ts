// What configureLoad tells the object when the kernel plan leaves part of a feature out: its
// programs go whole, and the read-only config agrees with what is loaded.
import { describe, expect, it } from 'vitest';
import { CONFIG } from './layout.js';
import { configureLoad } from './load-config.js';

function recordingObject() {
  const notLoaded: string[] = [];
  const config: { bytes?: Buffer } = {};
  return {
    notLoaded,
    config,
    setAutoload: (name: string, autoload: boolean) => {
      if (!autoload) notLoaded.push(name);
    },
    setReadOnlyConfig: (bytes: Buffer) => {
      config.bytes = bytes;
    },
    setMaxEntries: () => undefined,
  };
}

describe('configureLoad', () => {
  it('counts TCP sockets in the flow maps when the kernel refuses the socket iterator: no socket-storage counting left unreported', () => {
    // The socket-iterator hook's programs left out: with socket_counters still on, connected TCP
    // sockets would count into their storage, which nothing reports at the drain.
    const object = recordingObject();
    const loaded = configureLoad(object, { socketMode: true, interfaceMode: false, omitPrograms: ['kappa_drain_sockets', 'kappa_tcp_destroy'], dns: true, target: { id: 0n, level: 0 } });
    expect(object.notLoaded).toEqual(expect.arrayContaining(['kappa_drain_sockets', 'kappa_tcp_destroy', 'kappa_sock_release']));
    expect(loaded.socketCounters).toBe(false);
    expect(object.config.bytes?.readUInt32LE(CONFIG.fields.socket_counters.offset)).toBe(0);
    expect(loaded.dns).toBe(true);
  });

  it("verifies only the programs of the modes in use: tc's in interface mode, the cgroup and tracing ones in socket mode", () => {
    const load = (socketMode: boolean, interfaceMode: boolean) => {
      const object = recordingObject();
      configureLoad(object, { socketMode, interfaceMode, omitPrograms: [], dns: true, target: { id: 0n, level: 0 } });
      return object.notLoaded;
    };
    const socketOnly = load(true, false);
    expect(socketOnly).toEqual(expect.arrayContaining(['kappa_tc_ingress', 'kappa_tc_egress']));
    expect(socketOnly).not.toContain('kappa_skb_ingress');
    const interfaceOnly = load(false, true);
    expect(interfaceOnly).toEqual(expect.arrayContaining(['kappa_skb_ingress', 'kappa_skb_egress', 'kappa_sockops', 'kappa_sock_send', 'kappa_drain_sockets', 'kappa_exec']));
    expect(interfaceOnly).not.toContain('kappa_tc_ingress');
    const both = load(true, true);
    expect(both).not.toContain('kappa_tc_egress');
    expect(both).not.toContain('kappa_skb_egress');
  });
});
