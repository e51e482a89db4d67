/**
 * Seeded pseudo-random numbers (sfc32), so that simulations and retries can be replayed exactly.
 */

/** A seeded generator of floats in [0, 1). */
export type Random = () => number

/** Creates an sfc32 generator from a 32-bit seed. Same seed, same sequence, on every platform. */
export function seededRandom(seed: number): Random {
  let a = 0x9e3779b9 ^ seed
  let b = 0x243f6a88
  let c = 0xb7e15162
  let d = seed | 0
  const next = (): number => {
    a |= 0
    b |= 0
    c |= 0
    d |= 0
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 12; i++) next() // discard the weakly mixed first outputs
  return next
}
