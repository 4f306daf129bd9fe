// UTF-8 validation by byte, as WHATWG's decoder (TextDecoder, and so protobuf-es) reads it: for
// writers that copy string bytes from records in place (JSON Lines, the flow store's CSV index).

/**
 * The UTF-8 sequence starting with the non-ASCII byte bytes[i] (before end): its length when it
 * is valid, else minus the length of its maximal invalid subpart (WHATWG's decoder, which
 * TextDecoder and protobuf-es follow: that many bytes make one U+FFFD).
 */
export function utf8SequenceLength(bytes: Uint8Array, i: number, end: number): number {
  const b = bytes[i]!;
  let need: number;
  let lower = 0x80;
  let upper = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) need = 1;
  else if (b >= 0xe0 && b <= 0xef) {
    need = 2;
    if (b === 0xe0) lower = 0xa0;
    else if (b === 0xed) upper = 0x9f; // no surrogates
  } else if (b >= 0xf0 && b <= 0xf4) {
    need = 3;
    if (b === 0xf0) lower = 0x90;
    else if (b === 0xf4) upper = 0x8f; // nothing above U+10FFFF
  } else return -1;
  for (let k = 1; k <= need; k++) {
    const c = i + k < end ? bytes[i + k]! : -1;
    if (c < lower || c > upper) return -k;
    lower = 0x80;
    upper = 0xbf;
  }
  return need + 1;
}
