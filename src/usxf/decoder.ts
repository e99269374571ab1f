import { SIGNATURE_CONTEXTS, verifySignature } from '../identity/index.ts'
import { BlockCoder } from './blocks.ts'
import { StagingRing, sha256 } from './hash.ts'
import { UsxfBlockHashError, UsxfFormatError, UsxfProducerError, UsxfSignatureError, UsxfTruncatedError } from './errors.ts'
import {
  CHUNK_PREFIX, LIMITS, RECORD_CHUNK, RECORD_HEADER, RECORD_OVERHEAD, RECORD_TRAILER, blockBytes, largestBlockBytes, decodeHeaderBody, decodeTrailerBody, layoutOf, openRecord,
  payloadSize, recordName, signedMessage, toHex, type Layout, type TrailerInfo, type UsxfHeaderInfo
} from './format.ts'

/** Where decoded values go: f32 planes of seqLen x width, in the canonical plane order. */
export interface DecodeTarget {
  planes: readonly Float32Array[]
}

export interface DecoderOptions {
  /**
   * Sees the header before any payload is accepted: throw to refuse the stream (wrong model, shape,
   * context), or return where to decode. Default: fresh planes.
   */
  onHeader?: (header: UsxfHeaderInfo) => DecodeTarget | Promise<DecodeTarget>
  /** Refuse streams signed by anyone else (e.g. the peer at the other end of the channel). */
  expectedProducer?: Uint8Array
  /** Refuse states whose payload is larger (default 4 GiB). */
  maxPayloadBytes?: number
}

export interface DecodedState {
  header: UsxfHeaderInfo
  planes: readonly Float32Array[]
  trailer: TrailerInfo
  /** Bytes of every record, framing included. */
  streamBytes: number
}

export function allocatePlanes (header: UsxfHeaderInfo): Float32Array[] {
  const layout = layoutOf(header)
  return Array.from({ length: layout.planes }, () => new Float32Array(header.seqLen * layout.width))
}

/**
 * Decodes a USXF v1 stream pushed one record at a time. Every record's CRC is checked on arrival,
 * chunks must come in order, blocks are decoded into the target as they complete, and the trailer's
 * signature and block hashes are verified last: until `finish()` returns, nothing decoded may be
 * trusted (callers decode into staging, never into live state).
 */
export class UsxfDecoder {
  private readonly options: DecoderOptions
  private state: 'header' | 'chunks' | 'done' = 'header'
  private headerInfo: UsxfHeaderInfo | null = null
  private headerDigest: Uint8Array | null = null
  private layout: Layout | null = null
  private coder: BlockCoder | null = null
  private target: DecodeTarget | null = null
  private expected = { payloadBytes: 0, chunkCount: 0, blockCount: 0 }
  private ring: StagingRing | null = null
  private staging: Uint8Array = new Uint8Array(0)
  private block = 0
  private blockSize = 0
  private offset = 0
  private chunkIndex = 0
  private payloadBytes = 0
  private streamBytes = 0
  private readonly digests: Array<Promise<Uint8Array>> = []
  private trailerInfo: TrailerInfo | null = null

  constructor (options: DecoderOptions = {}) {
    this.options = options
  }

  get header (): UsxfHeaderInfo | null {
    return this.headerInfo
  }

  get done (): boolean {
    return this.state === 'done'
  }

  /** Payload bytes accepted so far (of the header's total). */
  get receivedPayloadBytes (): number {
    return this.payloadBytes
  }

  get totalPayloadBytes (): number {
    return this.expected.payloadBytes
  }

  async push (record: Uint8Array): Promise<void> {
    const { type, body } = openRecord(record)
    this.streamBytes += record.byteLength
    if (this.state === 'header') {
      if (type !== RECORD_HEADER) throw new UsxfFormatError(`a stream begins with a header record, not a ${recordName(type)} record`)
      await this.acceptHeader(body)
    } else if (this.state === 'chunks') {
      if (type === RECORD_CHUNK) await this.acceptChunk(body)
      else if (type === RECORD_TRAILER) await this.acceptTrailer(body)
      else throw new UsxfFormatError(`unexpected ${recordName(type)} record after the header`)
    } else {
      throw new UsxfFormatError(`unexpected ${recordName(type)} record after the trailer`)
    }
  }

  /** The verified state; throws UsxfTruncatedError if the stream has not reached its trailer. */
  finish (): DecodedState {
    if (this.state !== 'done' || this.headerInfo === null || this.target === null || this.trailerInfo === null) {
      if (this.headerInfo === null) throw new UsxfTruncatedError('the stream ended before its header')
      throw new UsxfTruncatedError(`the stream ended after ${this.chunkIndex} of ${this.expected.chunkCount} chunks, without its trailer`)
    }
    return { header: this.headerInfo, planes: this.target.planes, trailer: this.trailerInfo, streamBytes: this.streamBytes }
  }

  private async acceptHeader (body: Uint8Array): Promise<void> {
    const header = decodeHeaderBody(body)
    const expectedProducer = this.options.expectedProducer
    if (expectedProducer !== undefined && toHex(expectedProducer) !== toHex(header.producer)) {
      throw new UsxfProducerError(`the stream is signed by ${toHex(header.producer)}, expected ${toHex(expectedProducer)}`)
    }
    const size = payloadSize(header)
    const limit = this.options.maxPayloadBytes ?? 4 * 1024 ** 3
    if (size.payloadBytes > limit) throw new UsxfFormatError(`the payload would be ${size.payloadBytes} bytes; the limit is ${limit}`)
    const target = this.options.onHeader !== undefined ? await this.options.onHeader(header) : { planes: allocatePlanes(header) }
    const layout = layoutOf(header)
    if (target.planes.length !== layout.planes || target.planes.some((p) => p.length !== header.seqLen * layout.width)) {
      throw new UsxfFormatError(`the decode target must have ${layout.planes} planes of ${header.seqLen * layout.width} values`)
    }
    const largest = largestBlockBytes(layout, header.dtype, header.quantization, header.quantGroup)
    this.headerInfo = header
    this.headerDigest = sha256(body)
    this.layout = layout
    this.coder = new BlockCoder(layout, header.dtype, header.quantization, header.quantGroup)
    this.target = target
    this.expected = { payloadBytes: size.payloadBytes, chunkCount: size.chunkCount, blockCount: size.blockCount }
    this.ring = new StagingRing(largest)
    await this.nextStaging()
    this.block = 0
    this.offset = 0
    this.blockSize = layout.blockCount > 0 ? blockBytes(layout, 0, header.dtype, header.quantization, header.quantGroup) : 0
    this.state = 'chunks'
  }

  private async acceptChunk (body: Uint8Array): Promise<void> {
    const header = this.headerInfo as UsxfHeaderInfo
    if (body.byteLength < CHUNK_PREFIX) throw new UsxfFormatError('a chunk record is too short')
    const view = new DataView(body.buffer, body.byteOffset, CHUNK_PREFIX)
    const index = view.getUint32(0, true)
    const block = view.getUint32(4, true)
    const offset = view.getUint32(8, true)
    const payload = body.subarray(CHUNK_PREFIX)
    if (this.block >= this.expected.blockCount) throw new UsxfFormatError(`chunk ${index} comes after the last block`)
    if (index !== this.chunkIndex || block !== this.block || offset !== this.offset) {
      throw new UsxfFormatError(`chunk ${index} (block ${block} at ${offset}) is out of order; expected chunk ${this.chunkIndex} (block ${this.block} at ${this.offset})`)
    }
    const length = Math.min(header.chunkBytes, this.blockSize - this.offset)
    if (payload.byteLength !== length) throw new UsxfFormatError(`chunk ${index} carries ${payload.byteLength} bytes; expected ${length}`)
    this.staging.set(payload, this.offset)
    this.offset += length
    this.payloadBytes += length
    this.chunkIndex++
    if (this.offset < this.blockSize) return
    // A whole block: decode it into the target, then hash it off the main thread.
    const bytes = this.staging.subarray(0, this.blockSize)
    ;(this.coder as BlockCoder).decode(bytes, this.block, (this.target as DecodeTarget).planes)
    const digest = (this.ring as StagingRing).hash(bytes)
    digest.catch(() => {})
    this.digests.push(digest)
    this.block++
    this.offset = 0
    const layout = this.layout as Layout
    this.blockSize = this.block < layout.blockCount ? blockBytes(layout, this.block, header.dtype, header.quantization, header.quantGroup) : 0
    if (this.block < layout.blockCount) await this.nextStaging()
  }

  private async nextStaging (): Promise<void> {
    this.staging = await (this.ring as StagingRing).acquire()
  }

  private async acceptTrailer (body: Uint8Array): Promise<void> {
    const header = this.headerInfo as UsxfHeaderInfo
    if (this.chunkIndex < this.expected.chunkCount) {
      throw new UsxfTruncatedError(`the trailer came after ${this.chunkIndex} of ${this.expected.chunkCount} chunks`)
    }
    const trailer = decodeTrailerBody(body)
    const { blockCount, chunkCount, payloadBytes } = this.expected
    if (trailer.blockCount !== blockCount || trailer.chunkCount !== chunkCount || trailer.payloadBytes !== payloadBytes || trailer.blockHashes.byteLength !== blockCount * 32) {
      throw new UsxfFormatError(`the trailer describes ${trailer.blockCount} blocks, ${trailer.chunkCount} chunks, ${trailer.payloadBytes} bytes; the header implies ${blockCount}, ${chunkCount}, ${payloadBytes}`)
    }
    const message = signedMessage(this.headerDigest as Uint8Array, trailer)
    if (!verifySignature(header.producer, SIGNATURE_CONTEXTS.usxfHeader, message, trailer.signature)) {
      throw new UsxfSignatureError(`the signature over the header and block hashes does not verify for producer ${toHex(header.producer)}`)
    }
    const hashes = await Promise.all(this.digests)
    for (let b = 0; b < hashes.length; b++) {
      const signed = trailer.blockHashes.subarray(b * 32, (b + 1) * 32)
      if (toHex(signed) !== toHex(hashes[b])) throw new UsxfBlockHashError(`block ${b} hashes to ${toHex(hashes[b])}; the producer signed ${toHex(signed)}`)
    }
    this.trailerInfo = trailer
    this.state = 'done'
  }
}

/**
 * Splits a byte stream (a file, a socket) into records, each checked for size before it is
 * buffered. Throws UsxfTruncatedError when the bytes end inside a record.
 */
export async function * splitRecords (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, maxRecordBytes = LIMITS.maxChunkBytes + 64 * 1024): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = []
  let pendingBytes = 0
  const take = (n: number): Uint8Array => {
    const out = new Uint8Array(n)
    let filled = 0
    while (filled < n) {
      const head = pending[0]
      const used = Math.min(head.byteLength, n - filled)
      out.set(head.subarray(0, used), filled)
      filled += used
      if (used === head.byteLength) pending.shift()
      else pending[0] = head.subarray(used)
    }
    pendingBytes -= n
    return out
  }
  const peekLength = (): number => {
    const first5 = new Uint8Array(5)
    let filled = 0
    for (const part of pending) {
      const used = Math.min(part.byteLength, 5 - filled)
      first5.set(part.subarray(0, used), filled)
      filled += used
      if (filled === 5) break
    }
    return new DataView(first5.buffer).getUint32(1, true)
  }
  for await (const piece of source) {
    if (piece.byteLength === 0) continue
    pending.push(piece)
    pendingBytes += piece.byteLength
    while (pendingBytes >= 5) {
      const length = peekLength()
      if (length + RECORD_OVERHEAD > maxRecordBytes) throw new UsxfFormatError(`a record of ${length} bytes exceeds the ${maxRecordBytes}-byte limit`)
      if (pendingBytes < length + RECORD_OVERHEAD) break
      yield take(length + RECORD_OVERHEAD)
    }
  }
  if (pendingBytes > 0) {
    pending = []
    throw new UsxfTruncatedError(`the stream ended inside a record (${pendingBytes} bytes left over)`)
  }
}

/** Decodes a complete stream (records or raw bytes) and returns the verified state. */
export async function decodeStream (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: DecoderOptions = {}): Promise<DecodedState> {
  const decoder = new UsxfDecoder(options)
  for await (const record of splitRecords(source)) await decoder.push(record)
  return decoder.finish()
}
