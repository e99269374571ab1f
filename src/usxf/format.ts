import { endianness } from 'node:os'
import { UsxfHeader, UsxfTrailer } from '../pb/usxf.ts'
import type { RopeScaling } from '../model/index.ts'
import { crc32c } from './crc32c.ts'
import { UsxfChecksumError, UsxfFormatError } from './errors.ts'

// Typed-array views write host byte order; USXF is little-endian.
if (endianness() !== 'LE') throw new Error('USXF needs a little-endian host')

export const USXF_MAGIC = new Uint8Array([0x55, 0x53, 0x58, 0x46]) // "USXF"
export const USXF_MAJOR = 1
export const USXF_MINOR = 0

export const RECORD_HEADER = 1
export const RECORD_CHUNK = 2
export const RECORD_TRAILER = 3
/** type (1) + body length (4) before the body; CRC-32C (4) after it. */
export const RECORD_OVERHEAD = 9
/** chunk index, block index, offset in block (u32 each) before a chunk's payload. */
export const CHUNK_PREFIX = 12

export type UsxfKind = 'kv' | 'activations'
export type UsxfDtype = 'f32' | 'f16' | 'bf16'
export type UsxfQuantization = 'none' | 'f16' | 'int8-block'

export const KINDS: readonly UsxfKind[] = ['kv', 'activations']
export const DTYPES: readonly UsxfDtype[] = ['f32', 'f16', 'bf16']
export const QUANTIZATIONS: readonly UsxfQuantization[] = ['none', 'f16', 'int8-block']
const KIND_CODES: Record<UsxfKind, number> = { kv: 1, activations: 2 }
const DTYPE_CODES: Record<UsxfDtype, number> = { f32: 1, f16: 2, bf16: 3 }
const QUANT_CODES: Record<UsxfQuantization, number> = { none: 0, f16: 1, 'int8-block': 2 }
const ROPE_CODES = { none: 0, llama3: 1, linear: 2 } as const

export const DTYPE_BYTES: Record<UsxfDtype, number> = { f32: 4, f16: 2, bf16: 2 }

export function quantizationCode (q: UsxfQuantization): number {
  return QUANT_CODES[q]
}

export function quantizationFromCode (code: number): UsxfQuantization | undefined {
  return QUANTIZATIONS.find((q) => QUANT_CODES[q] === code)
}

/** Which model a state belongs to: hex SHA-256 of config.json and the store's weights identity. */
export interface ModelIdentity {
  configSha256: string
  weightsSha256: string
}

export interface RopeSpec {
  theta: number
  scaling: RopeScaling | null
}

/** Everything a USXF header says, in TypeScript form. */
export interface UsxfHeaderInfo {
  kind: UsxfKind
  model: ModelIdentity
  architecture: string
  numLayers: number
  /** Layers carried, [layerStart, layerEnd); activations: both are the layer the hidden states enter. */
  layerStart: number
  layerEnd: number
  numHeads: number
  numKvHeads: number
  headDim: number
  hiddenSize: number
  rope: RopeSpec
  /** Positions carried are positionStart .. positionStart + seqLen - 1. */
  positionStart: number
  seqLen: number
  /** Token ids of the carried positions, only when the producer's policy allows sharing them. */
  tokenIds: number[] | null
  dtype: UsxfDtype
  quantization: UsxfQuantization
  quantGroup: number
  blockTokens: number
  chunkBytes: number
  /** The signer's Ed25519 public key. */
  producer: Uint8Array
  createdAt: number
  streamId: Uint8Array
}

export const LIMITS = {
  layers: 1024,
  heads: 1024,
  headDim: 1024,
  hiddenSize: 65536,
  positions: 1 << 22,
  blockTokens: 65536,
  minChunkBytes: 16,
  maxChunkBytes: 16 << 20,
  maxQuantGroup: 65536,
  maxBlocks: 1 << 20,
  maxHeaderBytes: 4 << 20,
  architecture: 128
} as const

/** The payload's geometry: planes of `width` values per position, cut into token blocks. */
export interface Layout {
  planes: number
  width: number
  seqLen: number
  blockTokens: number
  blockCount: number
}

export function layoutOf (header: Pick<UsxfHeaderInfo, 'kind' | 'layerStart' | 'layerEnd' | 'numKvHeads' | 'headDim' | 'hiddenSize' | 'seqLen' | 'blockTokens'>): Layout {
  const planes = header.kind === 'kv' ? (header.layerEnd - header.layerStart) * 2 * header.numKvHeads : 1
  const width = header.kind === 'kv' ? header.headDim : header.hiddenSize
  return { planes, width, seqLen: header.seqLen, blockTokens: header.blockTokens, blockCount: Math.ceil(header.seqLen / header.blockTokens) }
}

/** Positions [rowStart, rowEnd) of block `b`, relative to positionStart. */
export function blockRows (layout: Layout, b: number): { rowStart: number, rowEnd: number } {
  const rowStart = b * layout.blockTokens
  return { rowStart, rowEnd: Math.min(layout.seqLen, rowStart + layout.blockTokens) }
}

/** Encoded bytes of `elements` values under a quantization. */
export function encodedElementBytes (elements: number, dtype: UsxfDtype, quantization: UsxfQuantization, group: number): number {
  if (quantization === 'none') return elements * DTYPE_BYTES[dtype]
  if (quantization === 'f16') return elements * 2
  return Math.ceil(elements / group) * 4 + elements
}

export function blockBytes (layout: Layout, b: number, dtype: UsxfDtype, quantization: UsxfQuantization, group: number): number {
  const { rowStart, rowEnd } = blockRows(layout, b)
  return encodedElementBytes(layout.planes * (rowEnd - rowStart) * layout.width, dtype, quantization, group)
}

export function largestBlockBytes (layout: Layout, dtype: UsxfDtype, quantization: UsxfQuantization, group: number): number {
  let largest = 0
  for (let b = 0; b < layout.blockCount; b++) largest = Math.max(largest, blockBytes(layout, b, dtype, quantization, group))
  return largest
}

/** Sizes of the whole payload: bytes, chunks, and the raw f32 size of the state. */
export function payloadSize (header: Pick<UsxfHeaderInfo, 'kind' | 'layerStart' | 'layerEnd' | 'numKvHeads' | 'headDim' | 'hiddenSize' | 'seqLen' | 'blockTokens' | 'dtype' | 'quantization' | 'quantGroup' | 'chunkBytes'>): { payloadBytes: number, chunkCount: number, blockCount: number, rawF32Bytes: number } {
  const layout = layoutOf(header)
  let payloadBytes = 0
  let chunkCount = 0
  for (let b = 0; b < layout.blockCount; b++) {
    const bytes = blockBytes(layout, b, header.dtype, header.quantization, header.quantGroup)
    payloadBytes += bytes
    chunkCount += Math.ceil(bytes / header.chunkBytes)
  }
  return { payloadBytes, chunkCount, blockCount: layout.blockCount, rawF32Bytes: layout.planes * layout.width * layout.seqLen * 4 }
}

// ---- records ----

const UNZEROED_RECORD_BYTES = 64 * 1024

/**
 * Allocates a record of `bodyLength` with `headroom` free (zeroed) bytes in front; the caller must
 * write the whole body, then seal. Large records skip zero-filling (the body is overwritten
 * anyway) and always own their ArrayBuffer, so they can be moved to the hashing worker.
 */
export function allocateRecord (type: number, bodyLength: number, headroom = 0): { buffer: Uint8Array, bodyOffset: number } {
  const size = headroom + RECORD_OVERHEAD + bodyLength
  let buffer: Uint8Array
  if (size >= UNZEROED_RECORD_BYTES) {
    const unsafe = Buffer.allocUnsafeSlow(size)
    buffer = new Uint8Array(unsafe.buffer, unsafe.byteOffset, size)
    buffer.fill(0, 0, headroom)
  } else {
    buffer = new Uint8Array(size)
  }
  buffer[headroom] = type
  new DataView(buffer.buffer, buffer.byteOffset + headroom + 1, 4).setUint32(0, bodyLength, true)
  return { buffer, bodyOffset: headroom + 5 }
}

/** Writes the CRC-32C of the record that starts at `headroom`. */
export function sealRecord (buffer: Uint8Array, headroom = 0): Uint8Array {
  const end = buffer.byteLength - 4
  const crc = crc32c(buffer.subarray(headroom, end))
  new DataView(buffer.buffer, buffer.byteOffset + end, 4).setUint32(0, crc, true)
  return buffer
}

export function makeRecord (type: number, body: Uint8Array, headroom = 0): Uint8Array {
  const { buffer, bodyOffset } = allocateRecord(type, body.byteLength, headroom)
  buffer.set(body, bodyOffset)
  return sealRecord(buffer, headroom)
}

/** Checks a whole record's framing and CRC; returns its type and body (a view). */
export function openRecord (record: Uint8Array): { type: number, body: Uint8Array } {
  if (record.byteLength < RECORD_OVERHEAD) throw new UsxfFormatError(`a record is at least ${RECORD_OVERHEAD} bytes, got ${record.byteLength}`)
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength)
  const type = record[0]
  const length = view.getUint32(1, true)
  if (length !== record.byteLength - RECORD_OVERHEAD) throw new UsxfFormatError(`record length field says ${length} bytes, the record holds ${record.byteLength - RECORD_OVERHEAD}`)
  const expected = view.getUint32(record.byteLength - 4, true)
  const actual = crc32c(record.subarray(0, record.byteLength - 4))
  if (expected !== actual) throw new UsxfChecksumError(`${recordName(type)} record CRC-32C is ${hex32(actual)}, expected ${hex32(expected)}`)
  return { type, body: record.subarray(5, 5 + length) }
}

export function recordName (type: number): string {
  return type === RECORD_HEADER ? 'header' : type === RECORD_CHUNK ? 'chunk' : type === RECORD_TRAILER ? 'trailer' : `type-${type}`
}

function hex32 (n: number): string {
  return n.toString(16).padStart(8, '0')
}

// ---- header and trailer bodies ----

export function toHex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export function fromHex (hex: string, bytes: number, what: string): Uint8Array {
  if (hex.length !== bytes * 2 || !/^[0-9a-f]*$/.test(hex)) throw new UsxfFormatError(`${what} must be ${bytes} bytes of lowercase hex`)
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

export function encodeHeaderBody (header: UsxfHeaderInfo): Uint8Array {
  validateHeader(header)
  const scaling = header.rope.scaling
  const proto = UsxfHeader.encode({
    kind: KIND_CODES[header.kind],
    model: { configSha256: fromHex(header.model.configSha256, 32, 'config hash') as Uint8Array<ArrayBuffer>, weightsSha256: fromHex(header.model.weightsSha256, 32, 'weights hash') as Uint8Array<ArrayBuffer> },
    architecture: header.architecture,
    numLayers: header.numLayers,
    layerStart: header.layerStart,
    layerEnd: header.layerEnd,
    numHeads: header.numHeads,
    numKvHeads: header.numKvHeads,
    headDim: header.headDim,
    hiddenSize: header.hiddenSize,
    rope: {
      theta: header.rope.theta,
      scaling: scaling === null ? ROPE_CODES.none : ROPE_CODES[scaling.type],
      factor: scaling?.factor ?? 0,
      lowFreqFactor: scaling?.lowFreqFactor ?? 0,
      highFreqFactor: scaling?.highFreqFactor ?? 0,
      originalMaxPositions: scaling?.originalMaxPositions ?? 0
    },
    positionStart: header.positionStart,
    seqLen: header.seqLen,
    tokenIds: header.tokenIds ?? [],
    dtype: DTYPE_CODES[header.dtype],
    quantization: QUANT_CODES[header.quantization],
    quantGroup: header.quantGroup,
    blockTokens: header.blockTokens,
    chunkBytes: header.chunkBytes,
    producer: header.producer as Uint8Array<ArrayBuffer>,
    createdAtMs: BigInt(header.createdAt),
    streamId: header.streamId as Uint8Array<ArrayBuffer>
  })
  const body = new Uint8Array(6 + proto.byteLength)
  body.set(USXF_MAGIC, 0)
  body[4] = USXF_MAJOR
  body[5] = USXF_MINOR
  body.set(proto, 6)
  return body
}

export function decodeHeaderBody (body: Uint8Array): UsxfHeaderInfo {
  if (body.byteLength < 6 || USXF_MAGIC.some((b, i) => body[i] !== b)) throw new UsxfFormatError('not a USXF stream (bad magic)')
  if (body[4] !== USXF_MAJOR) throw new UsxfFormatError(`USXF major version ${body[4]} is not supported (this is ${USXF_MAJOR})`)
  let proto: UsxfHeader
  try {
    proto = UsxfHeader.decode(body.subarray(6), { limits: { tokenIds: LIMITS.positions } })
  } catch (err) {
    throw new UsxfFormatError('the header does not decode', { cause: err })
  }
  const kind = KINDS.find((k) => KIND_CODES[k] === proto.kind)
  const dtype = DTYPES.find((d) => DTYPE_CODES[d] === proto.dtype)
  const quantization = quantizationFromCode(proto.quantization)
  if (kind === undefined) throw new UsxfFormatError(`unknown kind ${proto.kind}`)
  if (dtype === undefined) throw new UsxfFormatError(`unknown dtype ${proto.dtype}`)
  if (quantization === undefined) throw new UsxfFormatError(`unknown quantization ${proto.quantization}`)
  if (proto.model == null || proto.rope == null) throw new UsxfFormatError('the header lacks the model identity or rope spec')
  if (proto.model.configSha256.byteLength !== 32 || proto.model.weightsSha256.byteLength !== 32) throw new UsxfFormatError('model hashes must be 32 bytes')
  const rope = proto.rope
  let scaling: RopeScaling | null = null
  if (rope.scaling === ROPE_CODES.llama3 || rope.scaling === ROPE_CODES.linear) {
    scaling = { type: rope.scaling === ROPE_CODES.llama3 ? 'llama3' : 'linear', factor: rope.factor, lowFreqFactor: rope.lowFreqFactor, highFreqFactor: rope.highFreqFactor, originalMaxPositions: rope.originalMaxPositions }
  } else if (rope.scaling !== ROPE_CODES.none) {
    throw new UsxfFormatError(`unknown rope scaling ${rope.scaling}`)
  }
  if (proto.createdAtMs > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsxfFormatError('creation time is out of range')
  const header: UsxfHeaderInfo = {
    kind,
    model: { configSha256: toHex(proto.model.configSha256), weightsSha256: toHex(proto.model.weightsSha256) },
    architecture: proto.architecture,
    numLayers: proto.numLayers,
    layerStart: proto.layerStart,
    layerEnd: proto.layerEnd,
    numHeads: proto.numHeads,
    numKvHeads: proto.numKvHeads,
    headDim: proto.headDim,
    hiddenSize: proto.hiddenSize,
    rope: { theta: rope.theta, scaling },
    positionStart: proto.positionStart,
    seqLen: proto.seqLen,
    tokenIds: proto.tokenIds.length > 0 ? proto.tokenIds : null,
    dtype,
    quantization,
    quantGroup: proto.quantGroup,
    blockTokens: proto.blockTokens,
    chunkBytes: proto.chunkBytes,
    producer: proto.producer,
    createdAt: Number(proto.createdAtMs),
    streamId: proto.streamId
  }
  validateHeader(header)
  return header
}

const int = (value: number, min: number, max: number): boolean => Number.isInteger(value) && value >= min && value <= max

/** Internal consistency of a header (whoever made it); the receiver's own checks come on top. */
export function validateHeader (h: UsxfHeaderInfo): void {
  const fail = (message: string): never => { throw new UsxfFormatError(`invalid header: ${message}`) }
  if (!KINDS.includes(h.kind)) fail(`unknown kind ${String(h.kind)}`)
  if (!DTYPES.includes(h.dtype)) fail(`unknown dtype ${String(h.dtype)}`)
  if (!QUANTIZATIONS.includes(h.quantization)) fail(`unknown quantization ${String(h.quantization)}`)
  if (typeof h.architecture !== 'string' || h.architecture.length > LIMITS.architecture) fail('architecture name is too long')
  if (!int(h.numLayers, 1, LIMITS.layers)) fail('numLayers out of range')
  if (!int(h.layerStart, 0, h.numLayers) || !int(h.layerEnd, h.layerStart, h.numLayers)) fail(`layer range ${h.layerStart}-${h.layerEnd} is not inside 0-${h.numLayers}`)
  if (h.kind === 'kv' && h.layerEnd === h.layerStart) fail('a kv state carries at least one layer')
  if (h.kind === 'activations' && h.layerEnd !== h.layerStart) fail('activations name one layer boundary (layerStart = layerEnd)')
  if (!int(h.numHeads, 1, LIMITS.heads) || !int(h.numKvHeads, 1, h.numHeads) || h.numHeads % h.numKvHeads !== 0) fail('head counts are inconsistent')
  if (!int(h.headDim, 1, LIMITS.headDim) || !int(h.hiddenSize, 1, LIMITS.hiddenSize)) fail('head size or hidden size out of range')
  if (!(h.rope.theta > 0 && Number.isFinite(h.rope.theta))) fail('rope theta must be positive')
  if (!int(h.positionStart, 0, LIMITS.positions) || !int(h.seqLen, 0, LIMITS.positions - h.positionStart)) fail('positions out of range')
  if (h.tokenIds !== null && (h.tokenIds.length !== h.seqLen || h.tokenIds.some((t) => !int(t, 0, 0xffffffff)))) fail('token ids must be one per carried position')
  if (!int(h.blockTokens, 1, LIMITS.blockTokens)) fail('blockTokens out of range')
  if (!int(h.chunkBytes, LIMITS.minChunkBytes, LIMITS.maxChunkBytes)) fail('chunkBytes out of range')
  if (!int(h.quantGroup, h.quantization === 'int8-block' ? 1 : 0, LIMITS.maxQuantGroup)) fail('quantGroup out of range')
  if (h.producer.byteLength !== 32) fail('producer must be a 32-byte Ed25519 public key')
  if (h.streamId.byteLength !== 16) fail('streamId must be 16 bytes')
  if (!int(h.createdAt, 0, Number.MAX_SAFE_INTEGER)) fail('createdAt out of range')
  if (Math.ceil(h.seqLen / h.blockTokens) > LIMITS.maxBlocks) fail('too many blocks')
}

export interface TrailerInfo {
  blockCount: number
  chunkCount: number
  payloadBytes: number
  blockHashes: Uint8Array
  signature: Uint8Array
}

export function encodeTrailerBody (trailer: TrailerInfo): Uint8Array {
  return UsxfTrailer.encode({
    blockCount: trailer.blockCount,
    chunkCount: trailer.chunkCount,
    payloadBytes: BigInt(trailer.payloadBytes),
    blockHashes: trailer.blockHashes as Uint8Array<ArrayBuffer>,
    signature: trailer.signature as Uint8Array<ArrayBuffer>
  })
}

export function decodeTrailerBody (body: Uint8Array): TrailerInfo {
  let proto: UsxfTrailer
  try {
    proto = UsxfTrailer.decode(body)
  } catch (err) {
    throw new UsxfFormatError('the trailer does not decode', { cause: err })
  }
  if (proto.payloadBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsxfFormatError('payload size out of range')
  return { blockCount: proto.blockCount, chunkCount: proto.chunkCount, payloadBytes: Number(proto.payloadBytes), blockHashes: proto.blockHashes, signature: proto.signature }
}

/**
 * The bytes the producer signs (under context permagent/usxf/header/v1): SHA-256 of the header
 * record's body, then block count, chunk count and payload bytes (u32, u32, u64 little-endian),
 * then the block hashes in order.
 */
export function signedMessage (headerDigest: Uint8Array, trailer: Pick<TrailerInfo, 'blockCount' | 'chunkCount' | 'payloadBytes' | 'blockHashes'>): Uint8Array {
  const out = new Uint8Array(32 + 16 + trailer.blockHashes.byteLength)
  out.set(headerDigest, 0)
  const view = new DataView(out.buffer)
  view.setUint32(32, trailer.blockCount, true)
  view.setUint32(36, trailer.chunkCount, true)
  view.setBigUint64(40, BigInt(trailer.payloadBytes), true)
  out.set(trailer.blockHashes, 48)
  return out
}
