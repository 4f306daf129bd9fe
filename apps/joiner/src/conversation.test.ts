// Where records meet, and what a joined record looks like, without servers.
import { describe, expect, it } from 'vitest';
import { EndpointSchema, Vantage, create, newFlowRecord } from '@kappa/contracts';
import { conversationPlace } from './conversation.js';
import type { ConversationPlace } from './conversation.js';
import { joinedRecord } from './merge.js';

const client = { ip: '10.1.0.9', port: 40001 };
const service = { ip: '10.96.0.10', port: 80, kube: { objectType: 'service', objectName: 'web', objectNamespace: 'shop' } };
const backend = { ip: '10.2.0.5', port: 8080, kube: { objectType: 'pod', objectName: 'web-7d9f', serviceName: 'web', serviceNamespace: 'shop' } };

function place(init: Parameters<typeof newFlowRecord>[0]): ConversationPlace {
  const p = conversationPlace(newFlowRecord({ protocol: 6, node: 'n1', ...init }));
  if (typeof p === 'string') throw new Error(p);
  return p;
}

describe('conversationPlace', () => {
  it('puts both ends of a conversation in one group under one name', () => {
    const src = place({ vantage: Vantage.SRC, src: client, dst: { ip: '10.2.0.7', port: 5432 } });
    const dst = place({ vantage: Vantage.DST, node: 'n2', src: client, dst: { ip: '10.2.0.7', port: 5432 } });
    expect(src.tag).toBe(dst.tag);
    expect(src.conversations).toEqual(['10.2.0.7/5432']);
    expect(dst.conversations).toEqual(['10.2.0.7/5432']);
    expect(src.recordKey).not.toBe(dst.recordKey);
  });

  it('meets a Service client and the backend pod that answered under the Service name, in one group', () => {
    const viaService = place({ vantage: Vantage.SRC, src: client, dst: service });
    const atBackend = place({ vantage: Vantage.DST, node: 'n2', src: client, dst: backend });
    expect(viaService.tag).toBe(atBackend.tag);
    expect(viaService.conversations).toEqual(['svc/shop/web']);
    expect(atBackend.conversations).toEqual(['10.2.0.5/8080', 'svc/shop/web']);
  });

  it('gives each responder of one initiator socket in one interval a record of its own', () => {
    // One UDP socket sending to two ports in the same interval: two conversations, one group.
    const a = place({ vantage: Vantage.SRC, startNs: 5n, src: client, dst: { ip: '10.2.0.7', port: 53 } });
    const b = place({ vantage: Vantage.SRC, startNs: 5n, src: client, dst: { ip: '10.2.0.8', port: 53 } });
    expect(a.tag).toBe(b.tag);
    expect(a.recordKey).not.toBe(b.recordKey);
  });

  it('keeps loopback conversations of different nodes apart', () => {
    const lo = { ip: '127.0.0.1', port: 50000 };
    const a = place({ vantage: Vantage.SRC, node: 'a', src: lo, dst: { ip: '127.0.0.1', port: 80 } });
    const b = place({ vantage: Vantage.SRC, node: 'b', src: lo, dst: { ip: '127.0.0.1', port: 80 } });
    expect(a.tag).not.toBe(b.tag);
  });

  it('releases a record without a vantage at once', () => {
    expect(conversationPlace(newFlowRecord({ src: client, dst: backend }))).toBe('no-vantage');
  });
});

describe('joinedRecord', () => {
  it('keeps the Service address on the client record, adds the backend that answered, and names the Service on it', () => {
    const record = newFlowRecord({ vantage: Vantage.SRC, src: client, dst: service });
    const out = joinedRecord(record, create(EndpointSchema, { ...backend, kube: { ...backend.kube, serviceName: '' } }));
    expect(out.joined).toBe(true);
    expect(out.dst?.ip).toBe('10.96.0.10');
    expect(out.dst?.port).toBe(80);
    expect(out.dst?.backendIp).toBe('10.2.0.5');
    expect(out.dst?.backendPort).toBe(8080);
    expect(out.dst?.kube?.objectName).toBe('web-7d9f');
    expect(out.dst?.kube?.serviceName).toBe('web');
  });

  it('carries the DNS name the client resolved the server from onto the server\'s record', () => {
    const record = newFlowRecord({ vantage: Vantage.DST, src: { ...client }, dst: backend });
    const out = joinedRecord(record, create(EndpointSchema, { ...client, peerDnsName: 'web.shop.svc.cluster.local' }));
    expect(out.src?.peerDnsName).toBe('web.shop.svc.cluster.local');
    // A peer without a name leaves what this record had.
    const named = newFlowRecord({ vantage: Vantage.SRC, src: { ...client, peerDnsName: 'web.shop' }, dst: service });
    expect(joinedRecord(named, create(EndpointSchema, backend)).src?.peerDnsName).toBe('web.shop');
  });
});
