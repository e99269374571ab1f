import type { PeerId } from '@libp2p/interface'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import { SIGNATURE_CONTEXTS, verifySignature, type Identity } from '../identity/index.ts'
import { CapacityRecord, SignedCapacityRecord } from '../pb/capacity.ts'
import { PermagentError } from '../util/index.ts'
import { bytesToHex, hexToBytes } from './protocol.ts'

/** A model as layer servers name it: the hashes of its config.json and of its weight files (hex). */
export interface ModelIdentity {
  configSha256: string
  weightsSha256: string
}

/**
 * What a layer server says about itself, signed (docs/split-inference.md, "Discovery and
 * capacity records"). Figures are measured or read by the server when it issues the record.
 */
export interface CapacityInfo {
  peer: PeerId
  model: ModelIdentity
  start: number
  end: number
  /** Measured compute of one decode row per layer, ms. */
  msPerLayer: number
  /** One session's decode rate through the span, 1000 / (msPerLayer x layers); 0 when not measured. */
  tokensPerSecond: number
  maxSessions: number
  freeSessions: number
  maxLength: number
  freeMemoryBytes: number
  spanWeightBytes: number
  kvBytesPerPosition: number
  version: string
  issuedAtMs: number
  expiresAtMs: number
  withdrawn: boolean
  teamOnly: boolean
}

export class CapacityRecordError extends PermagentError {}

export const CAPACITY_ERRORS = {
  invalid: 'ERR_CAPACITY_INVALID',
  signature: 'ERR_CAPACITY_SIGNATURE',
  expired: 'ERR_CAPACITY_EXPIRED',
  mismatch: 'ERR_CAPACITY_MISMATCH'
} as const

/** A signed record is a few hundred bytes; anything past this is refused before decoding. */
export const MAX_SIGNED_CAPACITY_BYTES = 2048
/** Records live minutes, not days: a longer validity claimed by a record is refused. */
export const MAX_CAPACITY_TTL_MS = 3_600_000
/** Clock difference tolerated between server and client. */
export const CAPACITY_CLOCK_SKEW_MS = 60_000
const MAX_VERSION_CHARS = 64

function invalid (message: string): never {
  throw new CapacityRecordError(CAPACITY_ERRORS.invalid, `capacity record: ${message}`)
}

/** Encodes a record and signs the encoded bytes with the node key under permagent/infer/capacity/v1. */
export function signCapacityRecord (identity: Identity, info: Omit<CapacityInfo, 'peer'>): Uint8Array {
  const record = CapacityRecord.encode({
    peerId: identity.peerId.toMultihash().bytes as Uint8Array<ArrayBuffer>,
    configSha256: hexToBytes(info.model.configSha256) as Uint8Array<ArrayBuffer>,
    weightsSha256: hexToBytes(info.model.weightsSha256) as Uint8Array<ArrayBuffer>,
    layerStart: info.start,
    layerEnd: info.end,
    msPerLayer: info.msPerLayer,
    tokensPerSecond: info.tokensPerSecond,
    maxSessions: info.maxSessions,
    freeSessions: info.freeSessions,
    maxLength: info.maxLength,
    freeMemoryBytes: info.freeMemoryBytes,
    spanWeightBytes: info.spanWeightBytes,
    kvBytesPerPosition: info.kvBytesPerPosition,
    version: info.version.slice(0, MAX_VERSION_CHARS),
    issuedAtMs: info.issuedAtMs,
    expiresAtMs: info.expiresAtMs,
    withdrawn: info.withdrawn,
    teamOnly: info.teamOnly
  })
  const signature = identity.sign(SIGNATURE_CONTEXTS.capacityRecord, record)
  return SignedCapacityRecord.encode({ record: record as Uint8Array<ArrayBuffer>, signature: signature as Uint8Array<ArrayBuffer> })
}

const finiteNonNegative = (value: number): boolean => Number.isFinite(value) && value >= 0

/**
 * Decodes a signed record and checks it: well formed, signed by the key of the peer it names,
 * that peer being `expected.peer`, for `expected.model`, issued no later than now (plus skew) and
 * not expired. Throws CapacityRecordError (ERR_CAPACITY_INVALID, _SIGNATURE, _MISMATCH, _EXPIRED).
 * A withdrawn record verifies: it is the server's signed word that it stopped.
 */
export function verifyCapacityRecord (bytes: Uint8Array, expected: { peer?: PeerId, model?: ModelIdentity, now?: number }): CapacityInfo {
  if (bytes.byteLength > MAX_SIGNED_CAPACITY_BYTES) invalid(`${bytes.byteLength} bytes; the limit is ${MAX_SIGNED_CAPACITY_BYTES}`)
  let signed: SignedCapacityRecord
  let record: CapacityRecord
  try {
    signed = SignedCapacityRecord.decode(bytes)
    record = CapacityRecord.decode(signed.record)
  } catch (err) {
    throw new CapacityRecordError(CAPACITY_ERRORS.invalid, 'capacity record: not valid protobuf', { cause: err })
  }
  let peer: PeerId
  try {
    peer = peerIdFromMultihash(Digest.decode(record.peerId))
  } catch (err) {
    throw new CapacityRecordError(CAPACITY_ERRORS.invalid, 'capacity record: the peer id does not decode', { cause: err })
  }
  const publicKey = peer.publicKey
  if (publicKey?.type !== 'Ed25519') invalid('the peer id does not carry an Ed25519 key')
  if (!verifySignature(publicKey.raw, SIGNATURE_CONTEXTS.capacityRecord, signed.record, signed.signature)) {
    throw new CapacityRecordError(CAPACITY_ERRORS.signature, `capacity record of ${peer.toString()}: the signature does not verify`)
  }
  if (record.configSha256.byteLength !== 32 || record.weightsSha256.byteLength !== 32) invalid('a model hash is 32 bytes')
  if (!Number.isInteger(record.layerStart) || record.layerStart < 1 || record.layerEnd <= record.layerStart) invalid(`span ${record.layerStart}-${record.layerEnd} is not [start, end) with 1 <= start < end`)
  for (const [name, value] of Object.entries({ msPerLayer: record.msPerLayer, tokensPerSecond: record.tokensPerSecond, freeMemoryBytes: record.freeMemoryBytes, spanWeightBytes: record.spanWeightBytes, kvBytesPerPosition: record.kvBytesPerPosition, issuedAtMs: record.issuedAtMs, expiresAtMs: record.expiresAtMs })) {
    if (!finiteNonNegative(value)) invalid(`${name} must be a finite number >= 0`)
  }
  if (record.freeSessions > record.maxSessions) invalid('more free sessions than sessions')
  if (record.version.length > MAX_VERSION_CHARS) invalid(`version is longer than ${MAX_VERSION_CHARS} characters`)
  if (record.expiresAtMs < record.issuedAtMs || record.expiresAtMs - record.issuedAtMs > MAX_CAPACITY_TTL_MS) invalid(`a record is valid for at most ${MAX_CAPACITY_TTL_MS} ms`)
  const model = { configSha256: bytesToHex(record.configSha256), weightsSha256: bytesToHex(record.weightsSha256) }
  if (expected.peer != null && !expected.peer.equals(peer)) {
    throw new CapacityRecordError(CAPACITY_ERRORS.mismatch, `the capacity record names ${peer.toString()}, not the peer asked (${expected.peer.toString()})`)
  }
  if (expected.model != null && (expected.model.configSha256 !== model.configSha256 || expected.model.weightsSha256 !== model.weightsSha256)) {
    throw new CapacityRecordError(CAPACITY_ERRORS.mismatch, `the capacity record is for model ${model.weightsSha256.slice(0, 12)}…, not ${expected.model.weightsSha256.slice(0, 12)}…`)
  }
  const now = expected.now ?? Date.now()
  if (record.issuedAtMs > now + CAPACITY_CLOCK_SKEW_MS) throw new CapacityRecordError(CAPACITY_ERRORS.expired, `the capacity record of ${peer.toString()} was issued in the future (clock skew?)`)
  if (record.expiresAtMs + CAPACITY_CLOCK_SKEW_MS < now) throw new CapacityRecordError(CAPACITY_ERRORS.expired, `the capacity record of ${peer.toString()} expired at ${new Date(record.expiresAtMs).toISOString()}`)
  return {
    peer,
    model,
    start: record.layerStart,
    end: record.layerEnd,
    msPerLayer: record.msPerLayer,
    tokensPerSecond: record.tokensPerSecond,
    maxSessions: record.maxSessions,
    freeSessions: record.freeSessions,
    maxLength: record.maxLength,
    freeMemoryBytes: record.freeMemoryBytes,
    spanWeightBytes: record.spanWeightBytes,
    kvBytesPerPosition: record.kvBytesPerPosition,
    version: record.version,
    issuedAtMs: record.issuedAtMs,
    expiresAtMs: record.expiresAtMs,
    withdrawn: record.withdrawn,
    teamOnly: record.teamOnly
  }
}
