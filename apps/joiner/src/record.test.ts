// Where records meet (group and names, read from their bytes), and what a joined record looks
// like, without servers.
import { describe, expect, it } from 'vitest';
import { EndpointSchema, FlowBatchSchema, FlowBatchView, FlowBatchWriter, FlowRecordSchema, Vantage, conversationGroup, create, encodeFlowBatch, fromBinary, newFlowBatch, newFlowRecord, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { JoinRecord } from './record.js';
import { RecordSplicer } from './splice.js';

const client = { ip: '10.1.0.9', port: 40001 };
const service = { ip: '10.96.0.10', port: 80, kube: { objectType: 'service', objectName: 'web', objectNamespace: 'shop' } };
const backend = { ip: '10.2.0.5', port: 8080, kube: { objectType: 'pod', objectName: 'web-7d9f', serviceName: 'web', serviceNamespace: 'shop' } };

function read(init: Parameters<typeof newFlowRecord>[0], joinExternal = false): JoinRecord {
  const bytes = toBinary(FlowRecordSchema, newFlowRecord({ protocol: 6, node: 'n1', ...init }));
  return new JoinRecord().read(bytes, 0, bytes.length, joinExternal);
}

describe('JoinRecord', () => {
  it('puts both ends of a conversation in one group under one name', () => {
    const src = read({ vantage: Vantage.SRC, src: client, dst: { ip: '10.2.0.7', port: 5432 } });
    const dst = read({ vantage: Vantage.DST, node: 'n2', src: client, dst: { ip: '10.2.0.7', port: 5432 } });
    expect(src.group).toBe('6/10.1.0.9/40001');
    expect(dst.group).toBe(src.group);
    expect([src.conversation0, src.conversation1]).toEqual(['10.2.0.7/5432', '']);
    expect([dst.conversation0, dst.conversation1]).toEqual(['10.2.0.7/5432', '']);
  });

  it('meets a Service client and the backend pod that answered under the Service name, in one group', () => {
    const viaService = read({ vantage: Vantage.SRC, src: client, dst: service });
    const atBackend = read({ vantage: Vantage.DST, node: 'n2', src: client, dst: backend });
    expect(viaService.group).toBe(atBackend.group);
    expect([viaService.conversation0, viaService.conversation1]).toEqual(['svc/shop/web', '']);
    expect([atBackend.conversation0, atBackend.conversation1]).toEqual(['10.2.0.5/8080', 'svc/shop/web']);
  });

  it('keeps loopback conversations of different nodes apart', () => {
    const lo = { ip: '127.0.0.1', port: 50000 };
    const a = read({ vantage: Vantage.SRC, node: 'a', src: lo, dst: { ip: '127.0.0.1', port: 80 } });
    const b = read({ vantage: Vantage.SRC, node: 'b', src: lo, dst: { ip: '127.0.0.1', port: 80 } });
    expect(a.group).toBe('6/127.0.0.1/50000@a');
    expect(a.group).not.toBe(b.group);
  });

  it('keeps two pods\' identical loopback tuples apart by network namespace, and meets both vantages of one', () => {
    const tuple = (netns: number) => ({ src: { ip: '127.0.0.1', port: 50000, netns }, dst: { ip: '127.0.0.1', port: 80 } });
    const podA = read({ vantage: Vantage.SRC, node: 'a', ...tuple(4026532201) });
    const podB = read({ vantage: Vantage.SRC, node: 'a', ...tuple(4026532333) });
    // The DST vantage of pod A's conversation: capture set netns on its local end (dst).
    const podAServer = read({ vantage: Vantage.DST, node: 'a', src: { ip: '127.0.0.1', port: 50000 }, dst: { ip: '127.0.0.1', port: 80, netns: 4026532201 } });
    expect(podA.group).toBe('6/127.0.0.1/50000@a/4026532201');
    expect(podA.group).toBe(conversationGroup(6, '127.0.0.1', 50000, 'a', 4026532201));
    expect(podB.group).not.toBe(podA.group);
    expect(podAServer.group).toBe(podA.group);
    // Not loopback: the namespace is not part of the group (both nodes' records must meet).
    expect(read({ vantage: Vantage.SRC, src: { ...client, netns: 4026532201 }, dst: backend }).group).toBe('6/10.1.0.9/40001');
  });

  it('releases a record without a vantage or an end at once, and an external peer unless asked to wait', () => {
    expect(read({ src: client, dst: backend }).release).toBe('no-vantage');
    expect(read({ vantage: Vantage.SRC, src: client }).release).toBe('no-vantage');
    const external = { vantage: Vantage.SRC, src: client, dst: { ip: '203.0.113.9', port: 443, kube: { objectType: 'external' } } };
    expect(read(external).release).toBe('external');
    expect(read(external, true).release).toBe('');
  });
});

describe('RecordSplicer', () => {
  it('keeps the Service address on the client record, adds the backend that answered, and names the Service on it', () => {
    const record = newFlowRecord({ protocol: 6, vantage: Vantage.SRC, src: client, dst: service, bytes: 5n });
    const bytes = encodeFlowBatch(newFlowBatch({ records: [record] }));
    const view = new FlowBatchView().parse(bytes);
    const r = new JoinRecord().read(view.bytes, view.recordStart(0), view.recordEnd(0), false);
    const peer = toBinary(EndpointSchema, create(EndpointSchema, { ...backend, process: { pid: 88 }, kube: { ...backend.kube, serviceName: '' } }));
    const w = new FlowBatchWriter();
    w.open({ batchId: 'x', producer: 'joiner', createdNs: 0n }, 1 << 20);
    new RecordSplicer().joined(w, r, peer, 0, peer.length);
    const out: FlowRecord = fromBinary(FlowBatchSchema, w.parts()[0]!.bytes).records[0]!;
    expect(out.joined).toBe(true);
    expect(out.bytes).toBe(5n);
    expect(out.dst?.ip).toBe('10.96.0.10');
    expect(out.dst?.port).toBe(80);
    expect(out.dst?.backendIp).toBe('10.2.0.5');
    expect(out.dst?.backendPort).toBe(8080);
    expect(out.dst?.process?.pid).toBe(88);
    expect(out.dst?.kube?.objectName).toBe('web-7d9f');
    expect(out.dst?.kube?.serviceName).toBe('web');
    expect(out.dst?.kube?.serviceNamespace).toBe('shop');
  });

  it('carries the DNS name the peer resolved this end from onto the other vantage\'s record, and keeps its own otherwise', () => {
    const splice = (record: FlowRecord, peerEnd: Parameters<typeof create<typeof EndpointSchema>>[1]) => {
      const bytes = encodeFlowBatch(newFlowBatch({ records: [record] }));
      const view = new FlowBatchView().parse(bytes);
      const r = new JoinRecord().read(view.bytes, view.recordStart(0), view.recordEnd(0), false);
      const peer = toBinary(EndpointSchema, create(EndpointSchema, peerEnd));
      const w = new FlowBatchWriter();
      w.open({ batchId: 'x', producer: 'joiner', createdNs: 0n }, 1 << 20);
      new RecordSplicer().joined(w, r, peer, 0, peer.length);
      return fromBinary(FlowBatchSchema, w.parts()[0]!.bytes).records[0]!;
    };
    // The server's record: its remote end (the client) gets the name the client asked for.
    const atServer = splice(newFlowRecord({ protocol: 6, vantage: Vantage.DST, src: client, dst: backend }), { ...client, process: { pid: 7 }, peerDnsName: 'web.shop.svc.cluster.local' });
    expect(atServer.src?.peerDnsName).toBe('web.shop.svc.cluster.local');
    expect(atServer.src?.process?.pid).toBe(7);
    // The client's record keeps its own name on its local end; the server's end has none to give.
    const atClient = splice(newFlowRecord({ protocol: 6, vantage: Vantage.SRC, src: { ...client, peerDnsName: 'web.shop' }, dst: service }), { ...backend, process: { pid: 88 } });
    expect(atClient.src?.peerDnsName).toBe('web.shop');
    expect(atClient.dst?.peerDnsName).toBe('');
    expect(atClient.dst?.backendIp).toBe('10.2.0.5');
  });
});
