import { InvalidInputError } from '../../util/errors.ts'
import { boundBetween, END_BOUND, FINGERPRINT_BYTES, ID_BYTES, type Bound, type ReconcileSet } from './set.ts'

/**
 * Range-based set reconciliation in the style of Negentropy, made symmetric so that both sides end
 * up with the union and the larger side never sends its ids:
 *
 * - A message is a list of ranges over the (timestamp, id) order, each given by its exclusive upper
 *   bound (the lower bound is the previous range's upper bound); ranges past the last are skipped.
 * - FINGERPRINT(fp, count): the sender's digest of the range. The receiver skips it when equal;
 *   when the sender holds nothing there it pushes all it holds; when it holds at most
 *   `idListThreshold` items itself it answers with its ID_LIST; otherwise it splits its items into
 *   `buckets` ranges, each with its own fingerprint.
 * - ID_LIST(ids): all the sender's ids in the range. The receiver pushes the items the sender lacks
 *   (shard bytes, not ids) and lists the ids it lacks itself in `want`; the range is then settled.
 * - `want`: ids the receiver must push.
 *
 * A message with no ranges and no wants is final. Identical sets settle in one round trip; one
 * difference among n items in about log16(n) round trips and a few KB; a side that holds nothing
 * (or few items) in a range receives the other side's shards directly.
 */

export const MODE_SKIP = 0
export const MODE_FINGERPRINT = 1
export const MODE_ID_LIST = 2

export interface ReconcileRange {
  upper: Bound
  mode: number
  /** MODE_FINGERPRINT: 16 bytes. */
  fingerprint?: Uint8Array
  /** MODE_FINGERPRINT: how many items the sender holds in the range. */
  count?: number
  /** MODE_ID_LIST: the sender's ids in the range. */
  ids?: Uint8Array[]
}

export interface ReconcileMessage {
  ranges: ReconcileRange[]
  want: Uint8Array[]
}

export interface ReconcileOptions {
  /** How many ranges a mismatched range is split into (default 16). */
  buckets: number
  /** A side holding at most this many items in a mismatched range lists them (default 32; >= buckets). */
  idListThreshold: number
  /** Soft budget for an outgoing message's encoded size; past it the rest is sent as one range. */
  maxMessageBytes: number
}

export const DEFAULT_RECONCILE_OPTIONS: ReconcileOptions = { buckets: 16, idListThreshold: 32, maxMessageBytes: 256 * 1024 }

export function checkReconcileOptions (options: ReconcileOptions): ReconcileOptions {
  const { buckets, idListThreshold, maxMessageBytes } = options
  if (!Number.isInteger(buckets) || buckets < 2 || buckets > 256) throw new InvalidInputError(`buckets must be an integer in 2..256, got ${buckets}`)
  if (!Number.isInteger(idListThreshold) || idListThreshold < buckets || idListThreshold > 1024) {
    throw new InvalidInputError(`idListThreshold must be an integer in buckets..1024, got ${idListThreshold}`)
  }
  // at most 256 KiB keeps every answer within the peer's limits (ranges, wants, frame size)
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 4096 || maxMessageBytes > 256 * 1024) {
    throw new InvalidInputError(`maxMessageBytes must be an integer in 4096..262144, got ${maxMessageBytes}`)
  }
  return options
}

/** Whether a message ends the exchange (nothing left to compare, nothing wanted). */
export function isFinal (message: ReconcileMessage): boolean {
  return message.ranges.length === 0 && message.want.length === 0
}

/** An upper estimate of a range's protobuf size (see proto/sync.proto). */
function rangeBytes (range: ReconcileRange): number {
  let n = 4 + 11 + 2 + range.upper.idPrefix.length + 2 + 3
  if (range.mode === MODE_FINGERPRINT) n += 2 + FINGERPRINT_BYTES + 6
  if (range.mode === MODE_ID_LIST) n += 5 + (range.ids?.length ?? 0) * ID_BYTES
  return n
}

/** Builds an outgoing message: merges adjacent skips, drops trailing ones, tracks the size. */
class MessageBuilder {
  readonly ranges: ReconcileRange[] = []
  readonly want: Uint8Array[] = []
  bytes = 8

  skip (upper: Bound): void {
    const last = this.ranges[this.ranges.length - 1]
    if (last?.mode === MODE_SKIP) {
      last.upper = upper
      return
    }
    this.add({ upper, mode: MODE_SKIP })
  }

  add (range: ReconcileRange): void {
    this.ranges.push(range)
    this.bytes += rangeBytes(range)
  }

  addWant (id: Uint8Array): void {
    this.want.push(id)
    this.bytes += ID_BYTES
  }

  finish (): ReconcileMessage {
    while (this.ranges.length > 0 && this.ranges[this.ranges.length - 1].mode === MODE_SKIP) this.ranges.pop()
    return { ranges: this.ranges, want: this.want }
  }
}

function idsIn (set: ReconcileSet, begin: number, end: number): Uint8Array[] {
  const ids: Uint8Array[] = new Array(end - begin)
  for (let i = begin; i < end; i++) ids[i - begin] = set.idAt(i).slice()
  return ids
}

/** Our view of [begin, end): an id list when small, else one fingerprint. */
function describe (set: ReconcileSet, begin: number, end: number, upper: Bound, options: ReconcileOptions): ReconcileRange {
  const count = end - begin
  if (count <= options.idListThreshold) return { upper, mode: MODE_ID_LIST, ids: idsIn(set, begin, end) }
  return { upper, mode: MODE_FINGERPRINT, fingerprint: set.fingerprint(begin, end), count }
}

/** Splits our items in [begin, end) into `buckets` fingerprinted ranges ending at `upper`. */
function split (set: ReconcileSet, begin: number, end: number, upper: Bound, out: MessageBuilder, options: ReconcileOptions): void {
  const count = end - begin
  const buckets = Math.min(options.buckets, count)
  const per = Math.floor(count / buckets)
  const extra = count % buckets
  let current = begin
  for (let b = 0; b < buckets; b++) {
    const size = per + (b < extra ? 1 : 0)
    const next = current + size
    const bucketUpper = next === end ? upper : boundBetween(set, next)
    out.add({ upper: bucketUpper, mode: MODE_FINGERPRINT, fingerprint: set.fingerprint(current, next), count: size })
    current = next
  }
}

/** The initiator's first message: one range over everything. */
export function openingMessage (set: ReconcileSet, options: ReconcileOptions = DEFAULT_RECONCILE_OPTIONS): ReconcileMessage {
  return { ranges: [describe(set, 0, set.size(), END_BOUND, options)], want: [] }
}

export interface Answer {
  /** What to send back. */
  message: ReconcileMessage
  /** Ids of our items the peer lacks or asked for (copies): push their bytes before `message`. */
  push: Uint8Array[]
}

function idKey (id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')
}

function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Processes a peer's message against our set (synchronously, so indices stay stable) and returns
 * the answer and the ids to push. `incoming` must be validated (bounds strictly increasing,
 * sizes checked: see decodeReconcile).
 */
export function answerMessage (set: ReconcileSet, incoming: ReconcileMessage, options: ReconcileOptions = DEFAULT_RECONCILE_OPTIONS): Answer {
  const out = new MessageBuilder()
  const push: Uint8Array[] = []
  const pushed = new Set<string>()
  const addPush = (id: Uint8Array): void => {
    const key = idKey(id)
    if (pushed.has(key)) return
    pushed.add(key)
    push.push(id)
  }
  for (const id of incoming.want) addPush(id)

  const size = set.size()
  let lower = 0
  let worked = false
  for (const range of incoming.ranges) {
    const upper = Math.max(lower, set.lowerBound(range.upper))
    if (range.mode !== MODE_SKIP && worked && out.bytes > options.maxMessageBytes) {
      // over budget: hand the rest back as one range; the peer refines it next turn
      out.add(describe(set, lower, size, END_BOUND, options))
      return { message: out.finish(), push }
    }
    if (range.mode === MODE_FINGERPRINT) {
      worked = true
      const ours = upper - lower
      if (ours === range.count && equalBytes(set.fingerprint(lower, upper), range.fingerprint ?? new Uint8Array(0))) {
        out.skip(range.upper)
      } else if ((range.count ?? 0) === 0) {
        for (let i = lower; i < upper; i++) addPush(set.idAt(i).slice())
        out.skip(range.upper)
      } else if (ours <= options.idListThreshold) {
        out.add({ upper: range.upper, mode: MODE_ID_LIST, ids: idsIn(set, lower, upper) })
      } else {
        split(set, lower, upper, range.upper, out, options)
      }
    } else if (range.mode === MODE_ID_LIST) {
      worked = true
      const theirs = new Map<string, Uint8Array>()
      for (const id of range.ids ?? []) theirs.set(idKey(id), id)
      for (let i = lower; i < upper; i++) {
        const id = set.idAt(i)
        if (!theirs.delete(idKey(id))) addPush(id.slice())
      }
      for (const id of theirs.values()) out.addWant(id)
      out.skip(range.upper)
    } else {
      out.skip(range.upper)
    }
    lower = upper
  }
  return { message: out.finish(), push }
}
