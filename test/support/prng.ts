// Seeded pseudo-random numbers for tests (xorshift32), so a failing case replays exactly.

/** A source of uint32 values. */
export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** A source of integers in [0, n). */
export function prng(seed: number): (n: number) => number {
  const next = xorshift(seed);
  return (n: number) => next() % n;
}
