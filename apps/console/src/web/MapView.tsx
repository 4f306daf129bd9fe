// The service map: Cytoscape.js on a canvas (thousands of edges stay interactive), nodes placed
// by graph.ts's deterministic layout, namespaces as boxes, edges weighted by bytes/s and coloured
// by drops (purple and dashed: the kernel dropped packets of the edge's conversations), else by
// retransmits and RTT. Clicking a node or an edge opens its flows beside the map.
import cytoscape from 'cytoscape';
import type { Core, ElementDefinition } from 'cytoscape';
import { useEffect, useRef, useState } from 'react';
import { ApiError, getJson, rangeParam, rangeSeconds } from './api.js';
import type { Range, Verdict } from './api.js';
import { HEAVY_DROP_SHARE, buildMap, humanBytes, humanRtt, levels } from './graph.js';
import type { AggregateJson, Level, MapEdge, ServiceMap } from './graph.js';

export interface Selection {
  title: string;
  filter: string;
}

declare global {
  interface Window {
    /** For tests and the curious: the map's Cytoscape instance, its model and when it was drawn. */
    kappaMap?: { cy: Core; map: ServiceMap; renderedAt: number };
    /** When each step of the last map load ended (ms since navigation). */
    kappaMapTimings?: Record<string, number>;
  }
}

const colours: Record<MapEdge['health'], string> = { ok: '#5b8def', warn: '#e0a100', bad: '#d62828' };
const dropColours: Record<Exclude<MapEdge['drops'], 'none'>, string> = { some: '#b565d8', heavy: '#5c1a8c' };

/** Drops first (an edge that loses packets is what to look at), then retransmits and RTT. */
export const edgeColour = (e: MapEdge): string => (e.drops === 'none' ? colours[e.health] : dropColours[e.drops]);

const percent = (share: number) => `${(share * 100).toFixed(share < 0.001 ? 3 : share < 0.1 ? 2 : 1)} %`;
const droppedText = (e: MapEdge) => (e.droppedPackets > 0 ? `${e.droppedPackets} (${percent(e.droppedShare)})` : '0');

function elements(map: ServiceMap, large: boolean): ElementDefinition[] {
  const out: ElementDefinition[] = [];
  // Namespaces are compound boxes around their members; on a large map (where Cytoscape's
  // compound bounds cost seconds) a plain label above each namespace's block instead.
  const boxes = map.namespaces.length > 0 && !large;
  if (boxes) for (const box of map.namespaces) out.push({ group: 'nodes', data: { id: box.id, label: box.label }, classes: 'box' });
  else if (large) {
    for (const box of map.namespaces) {
      const members = map.nodes.filter((n) => n.namespace === box.label && !n.external);
      const x = Math.min(...members.map((n) => n.x));
      const y = Math.min(...members.map((n) => n.y));
      out.push({ group: 'nodes', data: { id: box.id, label: box.label }, position: { x: x + 40, y: y - 45 }, classes: 'nslabel', selectable: false });
    }
  }
  for (const n of map.nodes) {
    out.push({
      group: 'nodes',
      data: { id: n.id, label: n.label, ...(boxes && n.namespace && !n.external ? { parent: `box:${n.namespace}` } : {}) },
      position: { x: n.x, y: n.y },
      classes: n.external ? 'external' : '',
    });
  }
  for (const e of map.edges) {
    out.push({
      group: 'edges',
      data: {
        id: e.id,
        source: e.source,
        target: e.target,
        width: e.width,
        colour: edgeColour(e),
        lineStyle: e.drops === 'none' ? 'solid' : 'dashed',
        label: large ? '' : `${humanBytes(e.bytesPerSecond, '/s')} → · ${humanBytes(e.reverseBytesPerSecond, '/s')} ←${e.droppedPackets > 0 ? ` · ${e.droppedPackets} dropped` : ''}`,
      },
    });
  }
  return out;
}

export function MapView({
  range,
  filter,
  verdict,
  level,
  setLevel,
  onSelect,
  onFilterError,
}: {
  range: Range;
  filter: string;
  verdict: Verdict;
  level: Level;
  setLevel: (l: Level) => void;
  onSelect: (s: Selection) => void;
  onFilterError: (e: ApiError | undefined) => void;
}) {
  const container = useRef<HTMLDivElement>(null);
  const [map, setMap] = useState<ServiceMap | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [loading, setLoading] = useState(false);

  useEffect(() => {
    let gone = false;
    setLoading(true);
    (async () => {
      try {
        const timings: Record<string, number> = { start: performance.now() };
        window.kappaMapTimings = timings;
        const response = await getJson<{ aggregates?: AggregateJson[] }>('/api/map', { level, since: rangeParam(range.since), until: rangeParam(range.until), filter, verdict });
        timings.fetched = performance.now();
        if (gone) return;
        const built = buildMap(response.aggregates ?? [], level, rangeSeconds(range));
        timings.built = performance.now();
        setMap(built);
        setError(undefined);
        onFilterError(undefined);
      } catch (e) {
        if (gone) return;
        if (e instanceof ApiError && e.position !== undefined) onFilterError(e);
        setError(e instanceof Error ? e.message : String(e));
      } finally {
        if (!gone) setLoading(false);
      }
    })();
    return () => {
      gone = true;
    };
  }, [range.since, range.until, filter, verdict, level]);

  useEffect(() => {
    if (!map || !container.current) return;
    const large = map.edges.length > 1000;
    if (window.kappaMapTimings) window.kappaMapTimings.effect = performance.now();
    const cy = cytoscape({
      container: container.current,
      elements: elements(map, large),
      layout: { name: 'preset', fit: true, padding: 30 },
      minZoom: 0.05,
      maxZoom: 4,
      textureOnViewport: large,
      hideEdgesOnViewport: large,
      pixelRatio: large ? 1 : 'auto',
      motionBlur: false,
      style: [
        { selector: 'node', style: { label: 'data(label)', 'min-zoomed-font-size': large ? 7 : 0, 'font-size': 11, 'text-valign': 'bottom', 'text-margin-y': 3, width: 22, height: 22, 'background-color': '#2f4b7c', color: '#222' } },
        { selector: 'node.external', style: { 'background-color': '#888', shape: 'round-rectangle' } },
        { selector: 'node.nslabel', style: { 'background-opacity': 0, width: 1, height: 1, 'text-valign': 'center', 'font-weight': 'bold', 'font-size': 14, color: '#1d2b45' } },
        { selector: 'node.box', style: { 'background-color': '#eef2fb', 'border-color': '#9fb3d9', 'border-width': 1, shape: 'round-rectangle', 'text-valign': 'top', 'font-weight': 'bold', 'font-size': 13, padding: '18px' } },
        {
          selector: 'edge',
          style: large
            ? { width: 'data(width)', 'line-color': 'data(colour)', 'line-style': 'data(lineStyle)' as 'solid', 'curve-style': 'haystack', opacity: 0.5 }
            : { width: 'data(width)', 'line-color': 'data(colour)', 'line-style': 'data(lineStyle)' as 'solid', 'target-arrow-color': 'data(colour)', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier', label: 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate', 'text-background-color': '#fff', 'text-background-opacity': 0.8 },
        },
        { selector: ':selected', style: { 'overlay-color': '#d62828', 'overlay-opacity': 0.25 } },
      ],
    });
    if (window.kappaMapTimings) window.kappaMapTimings.created = performance.now();
    // Cytoscape draws in an animation frame; the frame after that one has the map on screen.
    let drawn = false;
    const markDrawn = () => {
      if (drawn || cy.destroyed()) return;
      drawn = true;
      window.kappaMap = { cy, map, renderedAt: performance.now() };
      container.current?.setAttribute('data-rendered', String(map.edges.length));
    };
    cy.one('render', markDrawn);
    cy.ready(() => requestAnimationFrame(() => requestAnimationFrame(markDrawn)));
    cy.on('tap', 'node', (event) => {
      const id = event.target.id() as string;
      const node = map.nodes.find((n) => n.id === id);
      if (node) onSelect({ title: `${node.external ? 'external endpoints' : node.label}: its flows`, filter: node.filter });
      else if (id.startsWith('box:')) onSelect({ title: `namespace ${id.slice(4)}: its flows`, filter: `namespace == ${JSON.stringify(id.slice(4))}` });
    });
    cy.on('tap', 'edge', (event) => {
      const edge = map.edges.find((e) => e.id === event.target.id());
      if (edge) onSelect({ title: `${labelOf(map, edge.source)} → ${labelOf(map, edge.target)}: its flows`, filter: edge.filter });
    });
    return () => cy.destroy();
  }, [map]);

  const shown = map ? [...map.edges].sort((a, b) => b.bytes + b.reverseBytes - (a.bytes + a.reverseBytes)).slice(0, 200) : [];
  return (
    <section className="map">
      <div className="toolbar">
        <label>
          level{' '}
          <select data-testid="level" value={level} onChange={(e) => setLevel(e.target.value as Level)}>
            {levels.map((l) => (
              <option key={l}>{l}</option>
            ))}
          </select>
        </label>
        <span className="legend" data-testid="legend">
          edge width: bytes/s · colour: <i style={{ color: colours.ok }}>healthy</i> <i style={{ color: colours.warn }}>retransmits or RTT &gt; 10 ms</i>{' '}
          <i style={{ color: colours.bad }}>retransmits &gt; 1 % or RTT &gt; 100 ms</i> · dashed:{' '}
          <i style={{ color: dropColours.some }} data-testid="legend-drops-some">
            packets dropped
          </i>{' '}
          <i style={{ color: dropColours.heavy }} data-testid="legend-drops-heavy">
            ≥ {HEAVY_DROP_SHARE * 100} % of packets dropped
          </i>
        </span>
        {loading && <span className="muted"> loading…</span>}
        {map && (
          <span className="muted" data-testid="map-summary">
            {' '}
            {map.nodes.length} nodes, {map.edges.length} edges
          </span>
        )}
      </div>
      {error && <p className="error" data-testid="map-error">{error}</p>}
      <div className="cy" ref={container} data-testid="map" />
      {map && (
        <details className="edge-list" open={map.edges.length <= 50}>
          <summary>
            connections ({map.edges.length}
            {map.edges.length > shown.length ? `, the ${shown.length} busiest listed` : ''})
          </summary>
          <table data-testid="edge-list">
            <thead>
              <tr>
                <th>source</th>
                <th>destination</th>
                <th className="num">bytes →</th>
                <th className="num">bytes ←</th>
                <th className="num">rate →</th>
                <th className="num">rate ←</th>
                <th className="num">retransmits</th>
                <th className="num">rtt</th>
                <th className="num">dropped</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((e) => (
                <tr key={e.id} data-testid="edge-row" data-source={labelOf(map, e.source)} data-target={labelOf(map, e.target)} data-bytes={e.bytes} data-reverse-bytes={e.reverseBytes} data-dropped-packets={e.droppedPackets} data-dropped-bytes={e.droppedBytes} data-drops={e.drops} className={e.drops === 'none' ? '' : `drops-${e.drops}`} onClick={() => onSelect({ title: `${labelOf(map, e.source)} → ${labelOf(map, e.target)}: its flows`, filter: e.filter })}>
                  <td>{labelOf(map, e.source)}</td>
                  <td>{labelOf(map, e.target)}</td>
                  <td className="num">{e.bytes}</td>
                  <td className="num">{e.reverseBytes}</td>
                  <td className="num">{humanBytes(e.bytesPerSecond, '/s')}</td>
                  <td className="num">{humanBytes(e.reverseBytesPerSecond, '/s')}</td>
                  <td className="num">{e.retransmits}</td>
                  <td className="num">{humanRtt(e.rttAvgUs)}</td>
                  <td className="num" style={e.drops === 'none' ? {} : { color: dropColours[e.drops], fontWeight: 600 }}>
                    {droppedText(e)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
    </section>
  );
}

/** "namespace/name" of a node (its id without the ns: prefix). */
function labelOf(map: ServiceMap, id: string): string {
  const node = map.nodes.find((n) => n.id === id);
  if (!node || node.external) return 'external';
  return id.startsWith('ns:') ? id.slice(3) : id;
}
