import { mix32 } from './fingerprint.ts'

/**
 * A Bloom filter over the LSH band keys the brain holds (see fingerprint.ts), so the
 * near-duplicate check at ingest can skip its SQL look-up (six B-tree seeks, ~20 µs) for the
 * large majority of memories that share no band with any other. A "no" is certain; a "maybe"
 * goes to SQL as before. Bands are never removed (a retracted memory keeps its rows), so the filter
 * only grows; when it gets too full to say "no" often, the owner rebuilds it at twice the size.
 */
/** Bits per key: with two probes, about 1 % of absent bands answer "maybe" at the fill limit. */
const BITS_PER_KEY = 24
const MIN_BITS = 1 << 20

export interface BandFilter {
  add: (band: number) => void
  /** False: no memory has this band. True: one may. */
  mayHold: (band: number) => boolean
  /** Whether the filter holds so many keys that it should be rebuilt larger. */
  full: () => boolean
}

/** A filter sized for `expectedKeys` band keys (and room to grow to twice that). */
export function createBandFilter (expectedKeys: number): BandFilter {
  let bits = MIN_BITS
  while (bits < expectedKeys * 2 * BITS_PER_KEY && bits < 2 ** 31) bits *= 2
  const mask = bits - 1
  const words = new Uint32Array(bits / 32)
  let keys = 0
  // a band key is band * 2^32 + a 32-bit hash: the low half is already well mixed
  const probes = (band: number): [number, number] => {
    const low = band % 0x100000000
    const high = Math.floor(band / 0x100000000)
    const a = mix32(low ^ Math.imul(high + 1, 0x9e3779b9))
    return [a & mask, mix32(a ^ 0x5bd1e995) & mask]
  }
  const test = (bit: number): boolean => (words[bit >>> 5] & (1 << (bit & 31))) !== 0
  return {
    add (band) {
      const [a, b] = probes(band)
      words[a >>> 5] |= 1 << (a & 31)
      words[b >>> 5] |= 1 << (b & 31)
      keys++
    },
    mayHold (band) {
      const [a, b] = probes(band)
      return test(a) && test(b)
    },
    full: () => keys * BITS_PER_KEY > bits
  }
}
