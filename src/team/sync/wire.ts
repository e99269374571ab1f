import { RequestError } from '../../mesh/index.ts'
import type { SyncRange, SyncReconcile } from '../../pb/sync.ts'
import { MODE_FINGERPRINT, MODE_ID_LIST, MODE_SKIP, type ReconcileMessage, type ReconcileRange } from './reconcile.ts'
import { compareBounds, END_BOUND, FINGERPRINT_BYTES, ID_BYTES, MAX_TIMESTAMP, type Bound } from './set.ts'

export const SYNC_PROTOCOL = '/permagent/sync/1.0.0'
export const FETCH_PROTOCOL = '/permagent/fetch/1.0.0'
export const SYNC_VERSION = 1

/** Protocol limits: what a peer may send us, whatever its configuration (docs/sync.md). */
export const SYNC_LIMITS = Object.freeze({
  /** One frame on a sync stream (length prefix excluded). */
  maxFrameBytes: 1024 * 1024,
  /** A team id string, in UTF-8 bytes. */
  maxTeamIdBytes: 128,
  maxRanges: 16_384,
  maxIdsPerRange: 1024,
  maxWant: 16_384,
  /** One shard (and one fetched resource of type shard). */
  maxShardBytes: 64 * 1024,
  maxShardsPerFrame: 4096,
  /** Ids in one fetch request. */
  maxFetchIds: 256,
  /** A fetch response. */
  maxFetchResponseBytes: 4 * 1024 * 1024
})

/** Resource types of /permagent/fetch/1.0.0. */
export const RESOURCE_SHARD = 1
export const RESOURCE_SKILL_BUNDLE = 2

export function protocolViolation (message: string, code = 'ERR_INVALID_MESSAGE'): RequestError {
  return new RequestError(code, SYNC_PROTOCOL, message)
}

function splitIds (bytes: Uint8Array, limit: number, what: string): Uint8Array[] {
  if (bytes.byteLength % ID_BYTES !== 0) throw protocolViolation(`${what}: ${bytes.byteLength} bytes is not a whole number of ${ID_BYTES}-byte ids`)
  const n = bytes.byteLength / ID_BYTES
  if (n > limit) throw protocolViolation(`${what}: ${n} ids; the limit is ${limit}`)
  const ids: Uint8Array[] = new Array(n)
  for (let i = 0; i < n; i++) ids[i] = bytes.subarray(i * ID_BYTES, (i + 1) * ID_BYTES)
  return ids
}

function joinIds (ids: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(ids.length * ID_BYTES)
  ids.forEach((id, i) => { out.set(id, i * ID_BYTES) })
  return out
}

export function encodeReconcile (message: ReconcileMessage): SyncReconcile {
  const ranges: SyncRange[] = message.ranges.map((range) => {
    const infinite = range.upper.timestamp === Number.POSITIVE_INFINITY
    return {
      timestamp: infinite ? 0 : range.upper.timestamp,
      idPrefix: infinite ? new Uint8Array(0) : range.upper.idPrefix as Uint8Array<ArrayBuffer>,
      infinite,
      mode: range.mode,
      fingerprint: (range.mode === MODE_FINGERPRINT ? range.fingerprint ?? new Uint8Array(0) : new Uint8Array(0)) as Uint8Array<ArrayBuffer>,
      count: range.mode === MODE_FINGERPRINT ? range.count ?? 0 : 0,
      ids: range.mode === MODE_ID_LIST ? joinIds(range.ids ?? []) : new Uint8Array(0)
    }
  })
  return { ranges, want: joinIds(message.want) }
}

/** Validates a peer's reconciliation message and converts it; throws ERR_INVALID_MESSAGE. */
export function decodeReconcile (message: SyncReconcile): ReconcileMessage {
  if (message.ranges.length > SYNC_LIMITS.maxRanges) throw protocolViolation(`${message.ranges.length} ranges; the limit is ${SYNC_LIMITS.maxRanges}`)
  const ranges: ReconcileRange[] = []
  let previous: Bound | undefined
  message.ranges.forEach((range, index) => {
    let upper: Bound
    if (range.infinite) {
      if (index !== message.ranges.length - 1) throw protocolViolation('only the last range may end at infinity')
      upper = END_BOUND
    } else {
      if (!Number.isSafeInteger(range.timestamp) || range.timestamp < 0 || range.timestamp > MAX_TIMESTAMP) throw protocolViolation(`range ${index}: bad timestamp`)
      if (range.idPrefix.byteLength > ID_BYTES) throw protocolViolation(`range ${index}: id prefix longer than ${ID_BYTES} bytes`)
      upper = { timestamp: range.timestamp, idPrefix: range.idPrefix }
    }
    if (previous != null ? compareBounds(upper, previous) <= 0 : (upper.timestamp === 0 && upper.idPrefix.every((b) => b === 0))) {
      throw protocolViolation(`range ${index}: bounds must increase strictly`)
    }
    previous = upper
    if (range.mode === MODE_SKIP) {
      ranges.push({ upper, mode: MODE_SKIP })
    } else if (range.mode === MODE_FINGERPRINT) {
      if (range.fingerprint.byteLength !== FINGERPRINT_BYTES) throw protocolViolation(`range ${index}: a fingerprint is ${FINGERPRINT_BYTES} bytes`)
      ranges.push({ upper, mode: MODE_FINGERPRINT, fingerprint: range.fingerprint, count: range.count })
    } else if (range.mode === MODE_ID_LIST) {
      ranges.push({ upper, mode: MODE_ID_LIST, ids: splitIds(range.ids, SYNC_LIMITS.maxIdsPerRange, `range ${index}`) })
    } else {
      throw protocolViolation(`range ${index}: unknown mode ${range.mode}`)
    }
  })
  return { ranges, want: splitIds(message.want, SYNC_LIMITS.maxWant, 'want') }
}

/** Size of a varint length prefix, to count bytes as they travel. */
export function varintLength (n: number): number {
  let length = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); length++ }
  return length
}
