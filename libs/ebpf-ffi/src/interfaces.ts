// Network interfaces of the calling process's network namespace. /proc/self/net/dev follows the
// process's namespace, where /sys/class/net shows the namespace /sys was mounted in (they differ
// under `nsenter --net`, the way a node agent enters a pod's namespace).
import { readFileSync } from 'node:fs';
import koffi from 'koffi';

let nameToIndex: ((name: string) => number) | undefined;

export interface NetworkInterface {
  readonly name: string;
  readonly ifindex: number;
}

export function listInterfaces(): NetworkInterface[] {
  nameToIndex ??= koffi.load('libc.so.6').func('unsigned int if_nametoindex(const char *name)');
  const lookup = nameToIndex;
  return readFileSync('/proc/self/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]?.trim() ?? '')
    .filter(Boolean)
    .map((name) => ({ name, ifindex: lookup(name) }))
    .filter((i) => i.ifindex > 0);
}
