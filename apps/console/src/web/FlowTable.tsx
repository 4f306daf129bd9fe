// A table of flows: time (date and time, UTC), node, the verdict (DROPPED with the count and the
// kernel's reason, like `kappa observe`; first, so a narrow side panel shows it), both ends (with
// the DNS name the other end asked for), protocol, bytes and packets per direction, RTT and the
// flow's DNS exchange. Used by the flow page, the
// live tail and the map's side panel.
import type { EndJson, FlowJson, FlowItem } from './api.js';
import { humanRtt } from './graph.js';

/** "ns/pod[process] dns-name ip:port"; the DNS name is the one the OTHER end resolved this end from. */
function end(e: EndJson | undefined, dnsName: string | undefined): string {
  if (!e) return '?';
  const k = e.kube;
  const name = k?.objectName ? `${k.objectNamespace ? `${k.objectNamespace}/` : ''}${k.objectName}` : '';
  const proc = e.process?.name ? `[${e.process.name}]` : '';
  const ip = e.ip?.includes(':') ? `[${e.ip}]` : (e.ip ?? '');
  return [`${name}${proc}`, dnsName ?? '', `${ip}:${e.port ?? 0}`].filter((s) => s !== '').join(' ');
}

const dnsTypes: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 65: 'HTTPS' };
const dnsRcodes: Record<number, string> = { 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED' };

/** "web.shop A NXDOMAIN 1.20 ms" for a flow with DNS exchanges, '' otherwise. */
function dnsText(f: FlowJson): string {
  const d = f.dns;
  if (!d) return '';
  const type = d.queryType ? (dnsTypes[d.queryType] ?? `TYPE${d.queryType}`) : '';
  const rcode = d.rcode ? (dnsRcodes[d.rcode] ?? `RCODE${d.rcode}`) : '';
  const count = Number(d.latencyCount ?? 0);
  const latency = count > 0 ? humanRtt(Math.round(Number(d.latencySumUs ?? 0) / count)) : '';
  return [d.queryName || '?', type, rcode, latency].filter((s) => s !== '').join(' ');
}

const droppedPackets = (f: FlowJson) => Number(f.drops?.packets ?? 0);

export function timeLabel(ns: string | undefined): string {
  if (!ns) return '-';
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 23);
}

export function FlowTable({ flows, empty }: { flows: FlowItem[]; empty: string }) {
  if (flows.length === 0) return <p className="muted" data-testid="no-flows">{empty}</p>;
  return (
    <table className="flows" data-testid="flow-table">
      <thead>
        <tr>
          <th>time (UTC)</th>
          <th>node</th>
          <th>verdict</th>
          <th>source</th>
          <th>destination</th>
          <th>proto</th>
          <th className="num">bytes →</th>
          <th className="num">bytes ←</th>
          <th className="num">pkts →</th>
          <th className="num">pkts ←</th>
          <th className="num">rtt</th>
          <th>dns</th>
        </tr>
      </thead>
      <tbody>
        {flows.map(({ flow: f }, i) => (
          <tr key={`${f.id}-${i}`} data-testid="flow-row" data-id={f.id} data-verdict={droppedPackets(f) > 0 ? 'dropped' : 'forwarded'}>
            <td>{timeLabel(f.endNs)}</td>
            <td>{f.node}</td>
            <td data-testid="flow-verdict" className={droppedPackets(f) > 0 ? 'dropped' : 'muted'}>
              {droppedPackets(f) > 0 ? `DROPPED ${droppedPackets(f)}${f.drops?.reason ? ` ${f.drops.reason}` : ''}` : 'forwarded'}
            </td>
            <td data-testid="flow-src">{end(f.src, f.dst?.peerDnsName)}</td>
            <td data-testid="flow-dst">{end(f.dst, f.src?.peerDnsName)}</td>
            <td>{(f.protocol ?? '').replace('IP_PROTOCOL_', '').toLowerCase()}</td>
            <td className="num">{f.bytes ?? '0'}</td>
            <td className="num">{f.reverseBytes ?? '0'}</td>
            <td className="num">{f.packets ?? '0'}</td>
            <td className="num">{f.reversePackets ?? '0'}</td>
            <td className="num">{humanRtt(f.tcp?.srttUs ?? 0)}</td>
            <td data-testid="flow-dns">{dnsText(f)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
