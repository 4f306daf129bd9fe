// An end's Kubernetes labels read in place, as one sorted `k=v,k=v` text: for IPFIX's labels
// element and the flow store's label column.
import { FlowFields } from '@kappa/contracts';
import type { MessageCursor } from '@kappa/contracts';
import type { ExportRecord } from './export-record.js';

const K = FlowFields.Kube;

/** Where a string value is: bytes[start, end) (the record's own bytes, or a field's scratch). */
export interface TextRange {
  bytes: Uint8Array;
  start: number;
  end: number;
}

/**
 * An end's labels as `k=v,k=v`, keys sorted as JavaScript sorts strings (UTF-16 code units; the
 * same as byte order for the ASCII keys Kubernetes allows), written into this field's scratch.
 */
export function labelsText(side: 'src' | 'dst'): (r: ExportRecord, out: TextRange) => void {
  let scratch = new Uint8Array(256);
  // Entries of the map being written: key start, key end, value start, value end.
  let entries = new Int32Array(64);
  let order = new Int32Array(16);
  let count = 0;
  let ascii = true;
  let kube: MessageCursor;
  const collect = (fieldNo: number, _tagStart: number, valueStart: number, end: number): void => {
    if (fieldNo !== K.labels) return;
    // A canonical entry: key (field 1) then value (field 2), each length-delimited.
    const bytes = kube.bytes;
    let pos = valueStart;
    while (bytes[pos]! >= 0x80) pos++;
    pos++;
    let keyStart = 0;
    let keyEnd = 0;
    let valueFrom = 0;
    let valueTo = 0;
    while (pos < end) {
      const tag = bytes[pos++]!;
      let length = 0;
      for (let shift = 0; ; shift += 7) {
        const b = bytes[pos++]!;
        length |= (b & 0x7f) << shift;
        if (b < 0x80) break;
      }
      if (tag >>> 3 === 1) {
        keyStart = pos;
        keyEnd = pos + length;
      } else {
        valueFrom = pos;
        valueTo = pos + length;
      }
      pos += length;
    }
    if (4 * (count + 1) > entries.length) {
      const grown = new Int32Array(entries.length * 2);
      grown.set(entries);
      entries = grown;
    }
    entries[4 * count] = keyStart;
    entries[4 * count + 1] = keyEnd;
    entries[4 * count + 2] = valueFrom;
    entries[4 * count + 3] = valueTo;
    for (let i = keyStart; i < keyEnd && ascii; i++) if (bytes[i]! >= 0x80) ascii = false;
    count++;
  };
  return (r, out) => {
    kube = r.end(side).kube;
    out.bytes = scratch;
    out.start = 0;
    out.end = 0;
    if (!kube.has(K.labels)) return;
    count = 0;
    ascii = true;
    kube.eachField(collect);
    const bytes = kube.bytes;
    // Insertion sort of the entries by key: a handful per pod.
    if (count > order.length) order = new Int32Array(count * 2);
    for (let i = 0; i < count; i++) order[i] = i;
    for (let i = 1; i < count; i++) {
      const e = order[i]!;
      let j = i - 1;
      while (j >= 0 && (ascii ? compareBytes(bytes, entries, e, order[j]!) < 0 : keyText(bytes, entries, e) < keyText(bytes, entries, order[j]!))) {
        order[j + 1] = order[j]!;
        j--;
      }
      order[j + 1] = e;
    }
    let size = 0;
    for (let i = 0; i < count; i++) size += entries[4 * i + 1]! - entries[4 * i]! + entries[4 * i + 3]! - entries[4 * i + 2]! + 2;
    if (size > scratch.length) scratch = new Uint8Array(size * 2);
    let o = 0;
    for (let n = 0; n < count; n++) {
      const e = 4 * order[n]!;
      if (n > 0) scratch[o++] = 0x2c; // ,
      for (let i = entries[e]!; i < entries[e + 1]!; i++) scratch[o++] = bytes[i]!;
      scratch[o++] = 0x3d; // =
      for (let i = entries[e + 2]!; i < entries[e + 3]!; i++) scratch[o++] = bytes[i]!;
    }
    out.bytes = scratch;
    out.end = o;
  };
}

function compareBytes(bytes: Uint8Array, entries: Int32Array, a: number, b: number): number {
  let i = entries[4 * a]!;
  let j = entries[4 * b]!;
  const iEnd = entries[4 * a + 1]!;
  const jEnd = entries[4 * b + 1]!;
  for (; i < iEnd && j < jEnd; i++, j++) if (bytes[i] !== bytes[j]) return bytes[i]! - bytes[j]!;
  return iEnd - i - (jEnd - j);
}

function keyText(bytes: Uint8Array, entries: Int32Array, a: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8', entries[4 * a], entries[4 * a + 1]);
}
