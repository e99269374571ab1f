import { createHash } from 'node:crypto'
import { InvalidInputError } from '../../util/errors.ts'

/** Items are 32-byte ids (SHA-256 of a shard's canonical bytes). */
export const ID_BYTES = 32
/** Range fingerprints are the first 16 bytes of SHA-256(sum of ids mod 2^256 || varint(count)). */
export const FINGERPRINT_BYTES = 16
/** Timestamps are integer milliseconds in 0..2^53-1. */
export const MAX_TIMESTAMP = Number.MAX_SAFE_INTEGER

/**
 * A point in the (timestamp, id) order: items below it have a smaller timestamp, or the same
 * timestamp and an id lexically below `idPrefix` padded with zero bytes. `timestamp: Infinity` is
 * the end of the space.
 */
export interface Bound {
  timestamp: number
  idPrefix: Uint8Array
}

export const START_BOUND: Bound = Object.freeze({ timestamp: 0, idPrefix: new Uint8Array(0) })
export const END_BOUND: Bound = Object.freeze({ timestamp: Number.POSITIVE_INFINITY, idPrefix: new Uint8Array(0) })

/**
 * The set the reconciliation engine runs against: items sorted by (timestamp, id), addressed by
 * index, with O(1)-ish range fingerprints. Indices are stable while no item is added, which holds
 * during the synchronous processing of one message.
 */
export interface ReconcileSet {
  size: () => number
  timestampAt: (index: number) => number
  /** The id at `index`; the view is valid until the set next changes (copy it to keep it). */
  idAt: (index: number) => Uint8Array
  /** The index of the first item at or above `bound` (size() for END_BOUND). */
  lowerBound: (bound: Bound) => number
  /** Fingerprint of the items at indices [begin, end). */
  fingerprint: (begin: number, end: number) => Uint8Array
}

/** Compares an item with a bound: negative if the item sorts below it. */
export function compareItemToBound (timestamp: number, id: Uint8Array, idOffset: number, bound: Bound): number {
  if (timestamp !== bound.timestamp) return timestamp < bound.timestamp ? -1 : 1
  const prefix = bound.idPrefix
  for (let i = 0; i < ID_BYTES; i++) {
    const b = i < prefix.length ? prefix[i] : 0
    const a = id[idOffset + i]
    if (a !== b) return a - b
  }
  return 0
}

/** Compares two bounds in the same order. */
export function compareBounds (a: Bound, b: Bound): number {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1
  const n = Math.max(a.idPrefix.length, b.idPrefix.length)
  for (let i = 0; i < n; i++) {
    const x = i < a.idPrefix.length ? a.idPrefix[i] : 0
    const y = i < b.idPrefix.length ? b.idPrefix[i] : 0
    if (x !== y) return x - y
  }
  return 0
}

function compareIdBytes (a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): number {
  for (let i = 0; i < ID_BYTES; i++) {
    const d = a[aOffset + i] - b[bOffset + i]
    if (d !== 0) return d
  }
  return 0
}

/** The shortest bound that sorts above item `index - 1` and at or below item `index`. */
export function boundBetween (set: ReconcileSet, index: number): Bound {
  const timestamp = set.timestampAt(index)
  if (set.timestampAt(index - 1) !== timestamp) return { timestamp, idPrefix: new Uint8Array(0) }
  const prev = set.idAt(index - 1)
  const next = set.idAt(index)
  let shared = 0
  while (shared < ID_BYTES && prev[shared] === next[shared]) shared++
  return { timestamp, idPrefix: next.slice(0, Math.min(ID_BYTES, shared + 1)) }
}

export function checkTimestamp (timestamp: number): void {
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new InvalidInputError(`timestamp must be an integer in 0..2^53-1, got ${timestamp}`)
}

export function checkId (id: Uint8Array): void {
  if (!(id instanceof Uint8Array) || id.byteLength !== ID_BYTES) throw new InvalidInputError(`an id must be ${ID_BYTES} bytes`)
}

function varint (value: number): number[] {
  const out: number[] = []
  let v = value
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
  return out
}

/** Hashes a 256-bit sum (8 little-endian 32-bit limbs) and a count into a range fingerprint. */
export function fingerprintOfSum (limbs: Uint32Array, count: number): Uint8Array {
  const bytes = new Uint8Array(ID_BYTES)
  for (let l = 0; l < 8; l++) {
    const v = limbs[l]
    bytes[l * 4] = v & 0xff
    bytes[l * 4 + 1] = (v >>> 8) & 0xff
    bytes[l * 4 + 2] = (v >>> 16) & 0xff
    bytes[l * 4 + 3] = (v >>> 24) & 0xff
  }
  const digest = createHash('sha256').update(bytes).update(Uint8Array.from(varint(count))).digest()
  return new Uint8Array(digest.buffer, digest.byteOffset, FINGERPRINT_BYTES).slice()
}

/** Adds the id at `offset` (a little-endian 256-bit integer) into `acc`, mod 2^256. */
function addId (acc: Uint32Array, ids: Uint8Array, offset: number): void {
  let carry = 0
  for (let l = 0; l < 8; l++) {
    const p = offset + l * 4
    const v = (ids[p] | (ids[p + 1] << 8) | (ids[p + 2] << 16) | (ids[p + 3] << 24)) >>> 0
    const s = acc[l] + v + carry
    acc[l] = s >>> 0
    carry = s > 0xffffffff ? 1 : 0
  }
}

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1

/** Adds item `index` of a Uint32Array view of the ids (8 limbs per id, little-endian platform). */
function addLimbs (acc: Uint32Array, words: Uint32Array, index: number): void {
  let carry = 0
  const base = index * 8
  for (let l = 0; l < 8; l++) {
    const s = acc[l] + words[base + l] + carry
    acc[l] = s >>> 0
    carry = s > 0xffffffff ? 1 : 0
  }
}

/** a -= b, mod 2^256. */
function subtractLimbs (a: Uint32Array, b: Uint32Array): void {
  let borrow = 0
  for (let l = 0; l < 8; l++) {
    const d = a[l] - b[l] - borrow
    borrow = d < 0 ? 1 : 0
    a[l] = d >>> 0
  }
}

/** Sum of the ids in `ids` (concatenated), as a fingerprint. */
export function fingerprintOfIds (ids: Uint8Array[]): Uint8Array {
  const acc = new Uint32Array(8)
  for (const id of ids) addId(acc, id, 0)
  return fingerprintOfSum(acc, ids.length)
}

/** Prefix sums are kept every CHECKPOINT items; a range sum adds at most 2 × (CHECKPOINT - 1) ids. */
const CHECKPOINT_SHIFT = 4
const CHECKPOINT = 1 << CHECKPOINT_SHIFT

/**
 * The in-memory ReconcileSet: sorted parallel arrays (timestamps, ids) and a prefix sum of the ids
 * every 16 items, so a range fingerprint costs at most 30 additions and one SHA-256. `add` queues
 * the item; the next read merges the queue in (sort of the queue, merge from the back, so adding
 * recent items costs only the tail) and the prefix sums are rebuilt from the first changed item.
 * Duplicates are ignored. Memory: about 40 bytes per item (1M items: ~42 MB).
 */
export class MemoryReconcileSet implements ReconcileSet {
  private count = 0
  private timestamps = new Float64Array(1024)
  private ids = new Uint8Array(1024 * ID_BYTES)
  /** The same bytes as 32-bit words (used on little-endian platforms, where they are the limbs). */
  private words = new Uint32Array(this.ids.buffer)
  /** checkpoints[k * 8 .. k * 8 + 8): the sum of ids [0, k * CHECKPOINT). */
  private checkpoints = new Uint32Array(8 * ((1024 >> CHECKPOINT_SHIFT) + 1))
  /** Checkpoints 0..validCheckpoints-1 are correct. */
  private validCheckpoints = 1
  private pendingCount = 0
  private pendingTimestamps = new Float64Array(64)
  private pendingIds = new Uint8Array(64 * ID_BYTES)
  private readonly scratchA = new Uint32Array(8)
  private readonly scratchB = new Uint32Array(8)

  /** Queues an item (validated); it is part of the set from the next read on. */
  add (timestamp: number, id: Uint8Array): void {
    checkTimestamp(timestamp)
    checkId(id)
    if (this.pendingCount === this.pendingTimestamps.length) {
      const capacity = this.pendingCount * 2
      const ts = new Float64Array(capacity)
      ts.set(this.pendingTimestamps)
      const ids = new Uint8Array(capacity * ID_BYTES)
      ids.set(this.pendingIds)
      this.pendingTimestamps = ts
      this.pendingIds = ids
    }
    this.pendingTimestamps[this.pendingCount] = timestamp
    this.pendingIds.set(id, this.pendingCount * ID_BYTES)
    this.pendingCount++
  }

  size (): number {
    this.flush()
    return this.count
  }

  timestampAt (index: number): number {
    this.flush()
    this.checkIndex(index)
    return this.timestamps[index]
  }

  idAt (index: number): Uint8Array {
    this.flush()
    this.checkIndex(index)
    return this.ids.subarray(index * ID_BYTES, (index + 1) * ID_BYTES)
  }

  has (timestamp: number, id: Uint8Array): boolean {
    this.flush()
    const i = this.lowerBound({ timestamp, idPrefix: id })
    return i < this.count && this.timestamps[i] === timestamp && compareIdBytes(this.ids, i * ID_BYTES, id, 0) === 0
  }

  /** Removes an item if present (O(n)); shards are immutable, so this is for purges only. */
  remove (timestamp: number, id: Uint8Array): boolean {
    if (!this.has(timestamp, id)) return false
    const i = this.lowerBound({ timestamp, idPrefix: id })
    this.timestamps.copyWithin(i, i + 1, this.count)
    this.ids.copyWithin(i * ID_BYTES, (i + 1) * ID_BYTES, this.count * ID_BYTES)
    this.count--
    this.invalidateFrom(i)
    return true
  }

  lowerBound (bound: Bound): number {
    this.flush()
    if (bound.timestamp === Number.POSITIVE_INFINITY) return this.count
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (compareItemToBound(this.timestamps[mid], this.ids, mid * ID_BYTES, bound) < 0) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  fingerprint (begin: number, end: number): Uint8Array {
    this.flush()
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end > this.count || begin > end) {
      throw new RangeError(`bad range [${begin}, ${end}) of ${this.count} items`)
    }
    const a = this.prefixSum(end, this.scratchA)
    const b = this.prefixSum(begin, this.scratchB)
    subtractLimbs(a, b)
    return fingerprintOfSum(a, end - begin)
  }

  private checkIndex (index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw new RangeError(`index ${index} out of 0..${this.count - 1}`)
  }

  /** The sum of ids [0, index) into `out`. */
  private prefixSum (index: number, out: Uint32Array): Uint32Array {
    const k = index >> CHECKPOINT_SHIFT
    this.buildCheckpoints(k)
    out.set(this.checkpoints.subarray(k * 8, k * 8 + 8))
    for (let i = k << CHECKPOINT_SHIFT; i < index; i++) this.addItem(out, i)
    return out
  }

  /** Makes checkpoints 0..k valid. */
  private buildCheckpoints (k: number): void {
    if (k < this.validCheckpoints) return
    const acc = this.scratchA.slice()
    for (let c = this.validCheckpoints; c <= k; c++) {
      acc.set(this.checkpoints.subarray((c - 1) * 8, c * 8))
      const from = (c - 1) << CHECKPOINT_SHIFT
      for (let i = from; i < from + CHECKPOINT; i++) this.addItem(acc, i)
      this.checkpoints.set(acc, c * 8)
    }
    this.validCheckpoints = k + 1
  }

  private addItem (acc: Uint32Array, index: number): void {
    if (LITTLE_ENDIAN) addLimbs(acc, this.words, index)
    else addId(acc, this.ids, index * ID_BYTES)
  }

  private invalidateFrom (index: number): void {
    // checkpoint c covers [0, c * CHECKPOINT); it stays valid while c * CHECKPOINT <= index
    this.validCheckpoints = Math.min(this.validCheckpoints, (index >> CHECKPOINT_SHIFT) + 1)
  }

  private ensureCapacity (needed: number): void {
    if (needed <= this.timestamps.length) return
    let capacity = this.timestamps.length
    while (capacity < needed) capacity = Math.ceil(capacity * 1.5)
    const ts = new Float64Array(capacity)
    ts.set(this.timestamps.subarray(0, this.count))
    const ids = new Uint8Array(capacity * ID_BYTES)
    ids.set(this.ids.subarray(0, this.count * ID_BYTES))
    const checkpoints = new Uint32Array(8 * ((capacity >> CHECKPOINT_SHIFT) + 1))
    checkpoints.set(this.checkpoints.subarray(0, this.validCheckpoints * 8))
    this.timestamps = ts
    this.ids = ids
    this.words = new Uint32Array(ids.buffer)
    this.checkpoints = checkpoints
  }

  /** Merges the queued items into the sorted arrays. */
  private flush (): void {
    const k = this.pendingCount
    if (k === 0) return
    const pts = this.pendingTimestamps
    const pids = this.pendingIds
    const order = new Uint32Array(k)
    for (let i = 0; i < k; i++) order[i] = i
    const before = (x: number, y: number): number => pts[x] !== pts[y] ? pts[x] - pts[y] : compareIdBytes(pids, x * ID_BYTES, pids, y * ID_BYTES)
    let sorted = true
    for (let i = 1; i < k && sorted; i++) sorted = before(i - 1, i) <= 0
    // fed in (timestamp, id) order (e.g. from an indexed SQLite query) there is nothing to sort
    if (!sorted) order.sort(before)
    // drop duplicates within the queue and items already in the set
    const keep: number[] = []
    for (let j = 0; j < k; j++) {
      const p = order[j]
      if (keep.length > 0) {
        const q = keep[keep.length - 1]
        if (pts[p] === pts[q] && compareIdBytes(pids, p * ID_BYTES, pids, q * ID_BYTES) === 0) continue
      }
      if (this.containsSorted(pts[p], pids, p * ID_BYTES)) continue
      keep.push(p)
    }
    this.pendingCount = 0
    if (this.pendingTimestamps.length > 4096) {
      this.pendingTimestamps = new Float64Array(64)
      this.pendingIds = new Uint8Array(64 * ID_BYTES)
    }
    const added = keep.length
    if (added === 0) return
    this.ensureCapacity(this.count + added)
    // merge from the back: items of the set above every new item do not move
    let i = this.count - 1
    let j = added - 1
    let w = this.count + added - 1
    const ts = this.timestamps
    const ids = this.ids
    while (j >= 0) {
      const p = keep[j]
      if (i >= 0 && (ts[i] !== pts[p] ? ts[i] > pts[p] : compareIdBytes(ids, i * ID_BYTES, pids, p * ID_BYTES) > 0)) {
        ts[w] = ts[i]
        ids.copyWithin(w * ID_BYTES, i * ID_BYTES, (i + 1) * ID_BYTES)
        i--
      } else {
        ts[w] = pts[p]
        ids.set(pids.subarray(p * ID_BYTES, (p + 1) * ID_BYTES), w * ID_BYTES)
        j--
      }
      w--
    }
    this.count += added
    this.invalidateFrom(i + 1)
  }

  /** Whether the sorted arrays (without the queue) hold the item. */
  private containsSorted (timestamp: number, id: Uint8Array, offset: number): boolean {
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const c = this.timestamps[mid] !== timestamp ? this.timestamps[mid] - timestamp : compareIdBytes(this.ids, mid * ID_BYTES, id, offset)
      if (c < 0) lo = mid + 1
      else hi = mid
    }
    return lo < this.count && this.timestamps[lo] === timestamp && compareIdBytes(this.ids, lo * ID_BYTES, id, offset) === 0
  }
}
