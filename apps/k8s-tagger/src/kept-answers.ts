// The tagger's answers kept by the bytes of what they answer (a local end's container id, a
// remote end's address), so that the next record of the same end costs a hash and a byte
// compare instead of strings, index lookups and an encoding. An answer is kept only when the
// resolver says it holds beyond its record (endpoint-resolver.ts, EndTag.reusable), and is used
// only while the index's version is the one it was made at and the flow's time is in its span.
import { BytesMap } from '@kappa/contracts';

const EMPTY = new Uint8Array(0);

/** One end's answer as encoded kube fields, and what it holds for. */
export class KeptAnswer {
  /** The index's version it was made at (-1: never valid). */
  version = -1;
  /**
   * ports.length and the first port with its field, kept here by portsDone(): most answers have
   * no port of their own or one, and then the arrays (two more objects to fetch) are not read.
   */
  portCount = 0;
  firstPort = -1;
  firstPortField: Uint8Array = EMPTY;
  /** The span of event time it holds for: [fromNs, untilNs). */
  fromNs = 0n;
  untilNs = 0n;
  /** A local end's answer names the node: the record's node field it was made for. */
  node: Uint8Array = EMPTY;
  /** The kube field on every port but `ports`. */
  field: Uint8Array = EMPTY;
  /** The ports on which a Service lists the end as a backend, and the kube field on each. */
  readonly ports: number[] = [];
  readonly portFields: Uint8Array[] = [];
  hit = false;
  pending = false;

  fieldOn(port: number): Uint8Array {
    const count = this.portCount;
    if (count === 0) return this.field;
    if (port === this.firstPort) return this.firstPortField;
    const ports = this.ports;
    for (let i = 1; i < count; i++) if (ports[i] === port) return this.portFields[i]!;
    return this.field;
  }

  /** To call once `ports` and `portFields` are filled. */
  portsDone(): void {
    this.portCount = this.ports.length;
    this.firstPort = this.portCount > 0 ? this.ports[0]! : -1;
    this.firstPortField = this.portCount > 0 ? this.portFields[0]! : EMPTY;
  }

  holds(version: number, atNs: bigint): boolean {
    return this.version === version && this.fromNs <= atNs && atNs < this.untilNs;
  }
}

/**
 * Answers by key bytes; bounded: full, it starts over (a node's pods and the addresses they talk
 * to fit; a flood of distinct outside addresses costs what no keeping does).
 */
export class KeptAnswers {
  private readonly map = new BytesMap<KeptAnswer>();

  constructor(private readonly maxEntries = 65_536) {}

  get(bytes: Uint8Array, start: number, end: number): KeptAnswer | undefined {
    return this.map.get(bytes, start, end);
  }

  /** A new answer kept under bytes[start, end) (not there yet). */
  add(bytes: Uint8Array, start: number, end: number): KeptAnswer {
    if (this.map.size >= this.maxEntries) this.map.clear();
    const answer = new KeptAnswer();
    this.map.set(bytes, start, end, answer);
    return answer;
  }

  get size(): number {
    return this.map.size;
  }
}
