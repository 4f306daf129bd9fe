// hubble-style selection flags (--from-pod, --to-port, --namespace, ...) and how each compiles
// into the filter language: the values of one flag are alternatives (or), different flags must
// all hold (and). The CLI builds its options from this table; the console shows the text.
import { FilterError, parseFilter } from './parse.js';

/** A flag value that does not make a valid filter: names the flag and the value. */
export class FlagValueError extends Error {
  override readonly name = 'FlagValueError';
  constructor(flag: string, value: string, cause: FilterError) {
    super(`--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${JSON.stringify(value)}: ${cause.reason}`, { cause });
  }
}

/** Quotes a value for the filter language when it is not a plain word. */
export function quoteValue(value: string): string {
  return /^[A-Za-z0-9_.:/*-]+$/.test(value) && !/^(and|or|not|in)$/i.test(value) ? value : JSON.stringify(value);
}

export interface SelectionFlag {
  /** Flag name without dashes, camelCase as @kappa/config names options (fromPod → --from-pod). */
  readonly option: string;
  readonly description: string;
  /** The filter for one value of the flag. */
  readonly compile: (value: string) => string;
}

type Side = 'src' | 'dst' | 'either';
const prefix = (side: Side) => (side === 'either' ? '' : `${side}.`);
const who = (side: Side) => (side === 'src' ? 'from (initiated by)' : side === 'dst' ? 'to (answered by)' : 'with either end at');

/** `[namespace/]name`: with a namespace, both must match. */
function qualified(side: Side, field: string) {
  return (value: string) => {
    const slash = value.indexOf('/');
    if (slash < 0) return `${prefix(side)}${field} == ${quoteValue(value)}`;
    const ns = value.slice(0, slash);
    const name = value.slice(slash + 1);
    if (side === 'either') {
      return `((src.namespace == ${quoteValue(ns)} and src.${field} == ${quoteValue(name)}) or (dst.namespace == ${quoteValue(ns)} and dst.${field} == ${quoteValue(name)}))`;
    }
    return `(${prefix(side)}namespace == ${quoteValue(ns)} and ${prefix(side)}${field} == ${quoteValue(name)})`;
  };
}

function endFlags(side: Side): SelectionFlag[] {
  const p = prefix(side);
  const name = (n: string) => (side === 'either' ? n : `${side === 'src' ? 'from' : 'to'}${n[0]!.toUpperCase()}${n.slice(1)}`);
  return [
    { option: name('pod'), description: `flows ${who(side)} these pods, [namespace/]pod`, compile: qualified(side, 'pod') },
    { option: name('namespace'), description: `flows ${who(side)} these namespaces`, compile: (v) => `${p}namespace == ${quoteValue(v)}` },
    { option: name('workload'), description: `flows ${who(side)} these workloads, [namespace/]workload`, compile: qualified(side, 'workload') },
    { option: name('ip'), description: `flows ${who(side)} these IP addresses`, compile: (v) => `${p}ip == ${quoteValue(v)}` },
    { option: name('cidr'), description: `flows ${who(side)} addresses in these CIDR prefixes`, compile: (v) => `${p}ip == ${quoteValue(v)}` },
    { option: name('port'), description: `flows ${who(side)} these ports`, compile: (v) => `${p}port == ${quoteValue(v)}` },
    { option: name('process'), description: `flows ${who(side)} these processes (comm)`, compile: (v) => `${p}process == ${quoteValue(v)}` },
    { option: name('label'), description: `flows ${who(side)} pods with these labels, key=value or key`, compile: (v) => `${p}label == ${quoteValue(v)}` },
    { option: name('service'), description: `flows ${who(side)} these Services`, compile: (v) => `${p}service == ${quoteValue(v)}` },
  ];
}

export const selectionFlags: readonly SelectionFlag[] = [
  ...endFlags('src'),
  ...endFlags('dst'),
  ...endFlags('either'),
  { option: 'node', description: 'flows observed on these nodes', compile: (v) => `node == ${quoteValue(v)}` },
  { option: 'protocol', description: 'flows of these protocols: tcp, udp, icmp, icmpv6, sctp or a number', compile: (v) => `protocol == ${quoteValue(v)}` },
  { option: 'vantage', description: 'flows observed at the initiator (src) or the responder (dst)', compile: (v) => `vantage == ${quoteValue(v)}` },
  { option: 'joined', description: 'joined (true) or unjoined (false) flows', compile: (v) => `joined == ${quoteValue(v)}` },
  { option: 'verdict', description: 'dropped: flows of which the kernel dropped packets; forwarded: flows it dropped none of', compile: verdict },
  { option: 'toFqdn', description: 'flows to these DNS names: the name the initiator asked for when it resolved the responder', compile: (v) => `src.peer_dns_name == ${quoteValue(v.toLowerCase().replace(/\.$/, ''))}` },
  { option: 'fromFqdn', description: 'flows from these DNS names: the name the responder asked for when it resolved the initiator', compile: (v) => `dst.peer_dns_name == ${quoteValue(v.toLowerCase().replace(/\.$/, ''))}` },
];

/** --verdict: hubble's names for whether a flow lost packets. */
function verdict(value: string): string {
  switch (value.toLowerCase()) {
    case 'dropped':
      return 'dropped_packets > 0';
    case 'forwarded':
      return 'dropped_packets == 0';
    default:
      throw new FilterError('expected dropped or forwarded', 0, value);
  }
}

/** The filter the given flag values select: per flag an or of its values, all flags and'ed. */
export function flagsToFilter(values: Readonly<Record<string, readonly string[] | string | undefined>>): string {
  const parts: string[] = [];
  for (const flag of selectionFlags) {
    const raw = values[flag.option];
    const list = raw === undefined ? [] : typeof raw === 'string' ? [raw] : raw;
    const given = list.filter((v) => v !== '');
    if (given.length === 0) continue;
    const alternatives = given.map((value) => {
      let text: string;
      try {
        text = flag.compile(value);
        parseFilter(text);
      } catch (error) {
        if (error instanceof FilterError) throw new FlagValueError(flag.option, value, error);
        throw error;
      }
      return text;
    });
    parts.push(alternatives.length === 1 ? alternatives[0]! : `(${alternatives.join(' or ')})`);
  }
  return parts.join(' and ');
}
