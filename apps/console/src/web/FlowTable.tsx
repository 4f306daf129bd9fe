// A table of flows: time (date and time, UTC), both ends, protocol, bytes and packets per
// direction, RTT. Used by the flow page, the live tail and the map's side panel.
import type { EndJson, FlowItem } from './api.js';
import { humanRtt } from './graph.js';

function end(e: EndJson | undefined): string {
  if (!e) return '?';
  const k = e.kube;
  const name = k?.objectName ? `${k.objectNamespace ? `${k.objectNamespace}/` : ''}${k.objectName}` : '';
  const proc = e.process?.name ? `[${e.process.name}]` : '';
  const ip = e.ip?.includes(':') ? `[${e.ip}]` : (e.ip ?? '');
  return `${name}${proc} ${ip}:${e.port ?? 0}`.trim();
}

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
          <th>source</th>
          <th>destination</th>
          <th>proto</th>
          <th className="num">bytes →</th>
          <th className="num">bytes ←</th>
          <th className="num">pkts →</th>
          <th className="num">pkts ←</th>
          <th className="num">rtt</th>
        </tr>
      </thead>
      <tbody>
        {flows.map(({ flow: f }, i) => (
          <tr key={`${f.id}-${i}`} data-testid="flow-row" data-id={f.id}>
            <td>{timeLabel(f.endNs)}</td>
            <td>{f.node}</td>
            <td>{end(f.src)}</td>
            <td>{end(f.dst)}</td>
            <td>{(f.protocol ?? '').replace('IP_PROTOCOL_', '').toLowerCase()}</td>
            <td className="num">{f.bytes ?? '0'}</td>
            <td className="num">{f.reverseBytes ?? '0'}</td>
            <td className="num">{f.packets ?? '0'}</td>
            <td className="num">{f.reversePackets ?? '0'}</td>
            <td className="num">{humanRtt(f.tcp?.srttUs ?? 0)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
