// Kernel timestamps (bpf_ktime_get_ns, CLOCK_MONOTONIC) → unix ns. Node's hrtime reads the
// same CLOCK_MONOTONIC, so the offset is wall clock minus hrtime, sampled tightly.
export function ktimeToUnixOffsetNs(): bigint {
  // Take the sample with the smallest hrtime gap around Date.now() to bound the error.
  let best: { offset: bigint; gap: bigint } | undefined;
  for (let i = 0; i < 5; i++) {
    const before = process.hrtime.bigint();
    const wall = BigInt(Date.now()) * 1_000_000n;
    const after = process.hrtime.bigint();
    const gap = after - before;
    if (!best || gap < best.gap) best = { offset: wall - (before + gap / 2n), gap };
  }
  return best?.offset ?? 0n;
}

export function unixNowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}
