// Preloaded into a service under test (NODE_OPTIONS=--import): at exit it writes whether
// Object.prototype (and Array's and Function's) still has exactly the properties and values it had
// at start, to $KAPPA_PROTOTYPE_REPORT_DIR/<pid>.json, so a test can check a process from outside.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.KAPPA_PROTOTYPE_REPORT_DIR;
// The intrinsics the check itself uses, taken before anything can replace them.
const { ownKeys } = Reflect;
const { getOwnPropertyDescriptor, getPrototypeOf } = Object;
const SafeMap = Map;
const mapGet = Map.prototype.get;
const mapHas = Map.prototype.has;
const mapSet = Map.prototype.set;
const toJson = JSON.stringify;
const watched = [
  ['Object', Object.prototype, null],
  ['Array', Array.prototype, Object.prototype],
  ['Function', Function.prototype, Object.prototype],
];

function snapshot(proto) {
  const out = new SafeMap();
  const keys = ownKeys(proto);
  for (let i = 0; i < keys.length; i++) mapSet.call(out, keys[i], getOwnPropertyDescriptor(proto, keys[i]));
  return out;
}

const before = [];
const ownKeysBefore = [];
for (let i = 0; i < watched.length; i++) {
  before[i] = snapshot(watched[i][1]);
  ownKeysBefore[i] = ownKeys(watched[i][1]);
}

function changes() {
  const out = [];
  for (let i = 0; i < watched.length; i++) {
    const [name, proto, parent] = watched[i];
    const was = before[i];
    const now = snapshot(proto);
    const keys = ownKeys(proto);
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k];
      const old = mapGet.call(was, key);
      const d = mapGet.call(now, key);
      if (!old) out[out.length] = `${name}.prototype gained ${String(key)}`;
      else if (old.value !== d.value || old.get !== d.get || old.set !== d.set) out[out.length] = `${name}.prototype changed ${String(key)}`;
    }
    const wasKeys = ownKeysBefore[i];
    for (let k = 0; k < wasKeys.length; k++) if (!mapHas.call(now, wasKeys[k])) out[out.length] = `${name}.prototype lost ${String(wasKeys[k])}`;
    if (getPrototypeOf(proto) !== parent) out[out.length] = `${name}.prototype has a new prototype`;
  }
  return out;
}

if (dir) {
  process.on('exit', (code) => {
    writeFileSync(join(dir, `${process.pid}.json`), toJson({ pid: process.pid, code, changes: changes() }));
  });
}
