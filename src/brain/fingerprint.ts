/**
 * Deterministic fingerprints of a text, with no model and no randomness:
 * - the shingle set: 32-bit hashes of the content terms and of adjacent content-term pairs,
 *   winnowed (minimum hash per window) when the text is long, so the set stays small while any
 *   shared run of terms longer than the window is still caught;
 * - a 48-value MinHash signature of that set, cut into 6 LSH bands of 8: texts that share a band
 *   are near-duplicate candidates, confirmed by the Jaccard similarity of their shingle sets.
 * Recall uses the shingle set to score how much of a query (words and word pairs) a memory
 * contains; ingest uses the bands to flag near-duplicates.
 */
import { contentTerms } from './text.ts'

// 6 bands of 8 rows: a pair of texts is a candidate with probability 1 - (1 - J^8)^6, so 0.97
// at Jaccard 0.9, 0.67 at 0.8, and 0.00002 at 0.2: texts that only share common words (a
// Zipf-distributed vocabulary makes many such pairs) almost never collide, which keeps the
// candidate check at ingest cheap as the brain grows.
export const BAND_ROWS = 8
export const BANDS = 6
export const MINHASH_SIZE = BANDS * BAND_ROWS
/** `(?, ?)` pairs / `?` list for statements over every band of a memory. */
export const BAND_PAIRS_SQL = Array.from({ length: BANDS }, () => '(?, ?)').join(', ')
export const BAND_LIST_SQL = Array.from({ length: BANDS }, () => '?').join(', ')
/** Above this many shingles a text's set is winnowed. */
const WINNOW_ABOVE = 192
const WINNOW_WINDOW = 4

/** FNV-1a over UTF-16 code units, then a murmur3 finaliser for avalanche. */
export function hash32 (text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return mix32(h)
}

/** The murmur3 finalizer: spreads a 32-bit value's bits over the whole word. */
export function mix32 (value: number): number {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The raw shingles of a term sequence, in text order: each term, then each adjacent pair. */
function shingleSequence (termList: string[]): number[] {
  const out: number[] = []
  for (let i = 0; i < termList.length; i++) {
    out.push(hash32(termList[i]))
    if (i + 1 < termList.length) out.push(hash32(termList[i] + ' ' + termList[i + 1]))
  }
  return out
}

/** Winnowing (Schleimer et al.): keep the minimum hash of every window of `window` shingles. */
export function winnow (sequence: number[], window: number): number[] {
  if (sequence.length <= window) return sequence.slice()
  const kept: number[] = []
  let lastIndex = -1
  for (let start = 0; start + window <= sequence.length; start++) {
    let minIndex = start
    for (let i = start + 1; i < start + window; i++) {
      if (sequence[i] <= sequence[minIndex]) minIndex = i
    }
    if (minIndex !== lastIndex) {
      kept.push(sequence[minIndex])
      lastIndex = minIndex
    }
  }
  return kept
}

function sortedUnique (values: number[]): Uint32Array {
  const sorted = Uint32Array.from(values).sort()
  let n = 0
  for (let i = 0; i < sorted.length; i++) {
    if (i === 0 || sorted[i] !== sorted[i - 1]) sorted[n++] = sorted[i]
  }
  return sorted.slice(0, n)
}

/** The fingerprint of a list of content terms: a sorted set of shingle hashes. */
export function shingleSetOfTerms (termList: string[]): Uint32Array {
  const sequence = shingleSequence(termList)
  return sortedUnique(sequence.length > WINNOW_ABOVE ? winnow(sequence, WINNOW_WINDOW) : sequence)
}

export function shingleSet (text: string): Uint32Array {
  return shingleSetOfTerms(contentTerms(text))
}

/** |a ∩ b| of two sorted sets. */
export function intersectionSize (a: Uint32Array, b: Uint32Array): number {
  let i = 0
  let j = 0
  let n = 0
  while (i < a.length && j < b.length) {
    if (a[i] < b[j]) i++
    else if (a[i] > b[j]) j++
    else { n++; i++; j++ }
  }
  return n
}

/** Whether a sorted set holds a value (binary search). */
export function holds (set: Uint32Array, value: number): boolean {
  let lo = 0
  let hi = set.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (set[mid] < value) lo = mid + 1
    else if (set[mid] > value) hi = mid - 1
    else return true
  }
  return false
}

export function jaccard (a: Uint32Array, b: Uint32Array): number {
  if (a.length === 0 && b.length === 0) return 1
  const common = intersectionSize(a, b)
  return common / (a.length + b.length - common)
}

/** The fraction of `probe`'s shingles that `document` contains. */
export function containment (probe: Uint32Array, document: Uint32Array): number {
  if (probe.length === 0) return 0
  return intersectionSize(probe, document) / probe.length
}

const PERMUTATION_SEEDS = Array.from({ length: MINHASH_SIZE }, (_, i) => mix32(0x9e3779b9 * (i + 1)))

export function minhash (set: Uint32Array): Uint32Array {
  const signature = new Uint32Array(MINHASH_SIZE).fill(0xffffffff)
  for (let s = 0; s < set.length; s++) {
    const value = set[s]
    for (let i = 0; i < MINHASH_SIZE; i++) {
      const permuted = mix32(value ^ PERMUTATION_SEEDS[i])
      if (permuted < signature[i]) signature[i] = permuted
    }
  }
  return signature
}

/**
 * LSH band keys of a signature: band b's key is b * 2^32 + a hash of its rows, a safe integer, so
 * one indexed column holds every band without collisions between bands.
 */
export function bandKeys (signature: Uint32Array): number[] {
  const keys: number[] = []
  for (let band = 0; band < BANDS; band++) {
    let h = 0x811c9dc5 ^ band
    for (let row = 0; row < BAND_ROWS; row++) {
      h = Math.imul(h ^ signature[band * BAND_ROWS + row], 0x01000193)
    }
    keys.push(band * 0x100000000 + mix32(h))
  }
  return keys
}

export function fingerprintToBlob (set: Uint32Array): Buffer {
  return Buffer.from(set.buffer, set.byteOffset, set.byteLength)
}

export function fingerprintFromBlob (blob: Uint8Array): Uint32Array {
  // a view when the blob is 4-byte aligned (read-only use; saves a copy per candidate on the
  // recall path), else a copy
  if (blob.byteOffset % 4 === 0 && blob.byteLength % 4 === 0) return new Uint32Array(blob.buffer, blob.byteOffset, blob.byteLength / 4)
  const copy = new Uint8Array(blob.byteLength - (blob.byteLength % 4))
  copy.set(blob.subarray(0, copy.length))
  return new Uint32Array(copy.buffer)
}
