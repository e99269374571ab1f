import { randomBytes } from 'node:crypto'
import { SIGNATURE_CONTEXTS } from '../identity/index.ts'
import { BlockCoder, type PlaneData } from './blocks.ts'
import { UsxfFormatError } from './errors.ts'
import { hashTransferred, sha256 } from './hash.ts'
import {
  CHUNK_PREFIX, DTYPE_BYTES, RECORD_CHUNK, RECORD_HEADER, RECORD_OVERHEAD, RECORD_TRAILER, allocateRecord, blockBytes, blockRows, largestBlockBytes, encodeHeaderBody, encodeTrailerBody, layoutOf, makeRecord,
  payloadSize, sealRecord, signedMessage, validateHeader, type Layout, type TrailerInfo, type UsxfHeaderInfo, type UsxfQuantization
} from './format.ts'

/** Who signs a stream: an Identity fits. */
export interface UsxfSigner {
  publicKey: Uint8Array
  sign: (context: string, message: Uint8Array) => Uint8Array
}

/** A state to encode: the header fields the producer knows, and the planes in canonical order. */
export interface UsxfStateInput extends Omit<UsxfHeaderInfo, 'quantization' | 'quantGroup' | 'blockTokens' | 'chunkBytes' | 'producer' | 'createdAt' | 'streamId'> {
  /** kv: for each layer, K of kv heads 0..H-1 then V of heads 0..H-1; activations: one plane. Each seqLen x width values. */
  planes: readonly PlaneData[]
}

export interface EncodeOptions {
  signer: UsxfSigner
  quantization?: UsxfQuantization
  /** int8-block: values per scale (default 32). */
  quantGroup?: number
  /** Positions per hashed block (default 64). */
  blockTokens?: number
  /** Largest chunk payload (default 1 MiB). */
  chunkBytes?: number
  /** Fixed for reproducible output (test vectors); default now. */
  createdAt?: number
  /** Fixed for reproducible output; default 16 random bytes. */
  streamId?: Uint8Array
  /** Free bytes in front of every record buffer, e.g. for a transport's frame prefix (default 0). */
  headroom?: number
}

export const DEFAULT_BLOCK_TOKENS = 64
export const DEFAULT_CHUNK_BYTES = 1 << 20
export const DEFAULT_QUANT_GROUP = 32
/** Blocks prepared ahead while earlier ones are being hashed. */
const BLOCKS_IN_FLIGHT = 3
/**
 * Encodes a state as a USXF v1 stream, one record at a time: the header, the chunks of every block
 * in order (each with its CRC-32C), then the signed trailer with the block hashes. Memory stays at
 * about one block whatever the state's size.
 */
export class UsxfEncoder {
  readonly header: UsxfHeaderInfo
  readonly layout: Layout
  readonly size: ReturnType<typeof payloadSize>
  private readonly planes: readonly PlaneData[]
  private readonly signer: UsxfSigner
  private readonly headroom: number
  private finished: TrailerInfo | null = null

  constructor (input: UsxfStateInput, options: EncodeOptions) {
    const quantization = options.quantization ?? 'none'
    const header: UsxfHeaderInfo = {
      kind: input.kind,
      model: input.model,
      architecture: input.architecture,
      numLayers: input.numLayers,
      layerStart: input.layerStart,
      layerEnd: input.layerEnd,
      numHeads: input.numHeads,
      numKvHeads: input.numKvHeads,
      headDim: input.headDim,
      hiddenSize: input.hiddenSize,
      rope: input.rope,
      positionStart: input.positionStart,
      seqLen: input.seqLen,
      tokenIds: input.tokenIds,
      dtype: input.dtype,
      quantization,
      quantGroup: quantization === 'int8-block' ? options.quantGroup ?? DEFAULT_QUANT_GROUP : 0,
      blockTokens: options.blockTokens ?? DEFAULT_BLOCK_TOKENS,
      chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
      producer: options.signer.publicKey,
      createdAt: options.createdAt ?? Date.now(),
      streamId: options.streamId ?? new Uint8Array(randomBytes(16))
    }
    validateHeader(header)
    this.header = header
    this.layout = layoutOf(header)
    this.size = payloadSize(header)
    const expectedType = header.dtype === 'f32' ? Float32Array : Uint16Array
    if (input.planes.length !== this.layout.planes) throw new UsxfFormatError(`expected ${this.layout.planes} planes, got ${input.planes.length}`)
    for (const plane of input.planes) {
      if (!(plane instanceof expectedType)) throw new UsxfFormatError(`planes of dtype ${header.dtype} must be ${expectedType.name}s`)
      if (plane.length !== header.seqLen * this.layout.width) throw new UsxfFormatError(`every plane must hold ${header.seqLen} x ${this.layout.width} values, one has ${plane.length}`)
    }
    this.planes = input.planes
    this.signer = options.signer
    this.headroom = options.headroom ?? 0
  }

  /** The trailer, once `records()` has run to the end. */
  get trailer (): TrailerInfo | null {
    return this.finished
  }

  async * records (): AsyncGenerator<Uint8Array> {
    const { header, layout, headroom } = this
    const headerBody = encodeHeaderBody(header)
    yield makeRecord(RECORD_HEADER, headerBody, headroom)
    const hashes: Uint8Array[] = []
    let chunkIndex = 0
    let payloadBytes = 0
    // Each block's records go to the worker to be hashed (moved, not copied) while the next blocks
    // are prepared; they are yielded, in order, when they come back.
    const inFlight: Array<Promise<{ digest: Uint8Array, buffers: ArrayBuffer[] }>> = []
    for (const block of this.blockRecords()) {
      chunkIndex += block.length
      payloadBytes += block.reduce((sum, record) => sum + record.byteLength - headroom - RECORD_OVERHEAD - CHUNK_PREFIX, 0)
      // (the records' memory moves to the worker here: they are not touched again until it is back)
      const hashing = hashTransferred(block.map((record) => record.subarray(headroom + 5 + CHUNK_PREFIX, record.byteLength - 4)))
      hashing.catch(() => {})
      inFlight.push(hashing)
      if (inFlight.length > BLOCKS_IN_FLIGHT) yield * this.settle(await (inFlight.shift() as Promise<{ digest: Uint8Array, buffers: ArrayBuffer[] }>), hashes)
    }
    for (const hashing of inFlight) yield * this.settle(await hashing, hashes)
    const blockHashes = new Uint8Array(32 * hashes.length)
    hashes.forEach((h, i) => blockHashes.set(h, i * 32))
    const unsigned = { blockCount: layout.blockCount, chunkCount: chunkIndex, payloadBytes, blockHashes }
    const signature = this.signer.sign(SIGNATURE_CONTEXTS.usxfHeader, signedMessage(sha256(headerBody), unsigned))
    this.finished = { ...unsigned, signature }
    yield makeRecord(RECORD_TRAILER, encodeTrailerBody(this.finished), headroom)
  }

  private * settle (hashed: { digest: Uint8Array, buffers: ArrayBuffer[] }, hashes: Uint8Array[]): Generator<Uint8Array> {
    hashes.push(hashed.digest)
    for (const buffer of hashed.buffers) yield new Uint8Array(buffer)
  }

  /**
   * The sealed chunk records of each block in turn. Raw values are copied from the planes straight
   * into the records; quantized ones are encoded into a staging buffer first.
   */
  private * blockRecords (): Generator<Uint8Array[]> {
    const { header, layout, headroom } = this
    const coder = new BlockCoder(layout, header.dtype, header.quantization, header.quantGroup)
    const staging = header.quantization === 'none' ? null : new Uint8Array(largestBlockBytes(layout, header.dtype, header.quantization, header.quantGroup))
    const valueBytes = DTYPE_BYTES[header.dtype]
    let chunkIndex = 0
    for (let b = 0; b < layout.blockCount; b++) {
      const size = blockBytes(layout, b, header.dtype, header.quantization, header.quantGroup)
      const records: Uint8Array[] = []
      for (let offset = 0; offset < size; offset += header.chunkBytes) {
        const length = Math.min(header.chunkBytes, size - offset)
        const { buffer, bodyOffset } = allocateRecord(RECORD_CHUNK, CHUNK_PREFIX + length, headroom)
        const view = new DataView(buffer.buffer, bodyOffset, CHUNK_PREFIX)
        view.setUint32(0, chunkIndex++, true)
        view.setUint32(4, b, true)
        view.setUint32(8, offset, true)
        records.push(buffer)
      }
      const payloadStart = headroom + 5 + CHUNK_PREFIX
      if (staging === null) {
        // the block is each plane's rows in turn: copy them across record boundaries
        const { rowStart, rowEnd } = blockRows(layout, b)
        const bytes = (rowEnd - rowStart) * layout.width * valueBytes
        let record = 0
        let at = 0
        for (const plane of this.planes) {
          let source = new Uint8Array(plane.buffer, plane.byteOffset + rowStart * layout.width * valueBytes, bytes)
          while (source.byteLength > 0) {
            const room = records[record].byteLength - payloadStart - 4 - at
            const n = Math.min(room, source.byteLength)
            records[record].set(source.subarray(0, n), payloadStart + at)
            source = source.subarray(n)
            at += n
            if (at === records[record].byteLength - payloadStart - 4) { record++; at = 0 }
          }
        }
      } else {
        const block = staging.subarray(0, size)
        coder.encode(this.planes, b, block)
        records.forEach((record, i) => record.set(block.subarray(i * header.chunkBytes, i * header.chunkBytes + record.byteLength - payloadStart - 4), payloadStart))
      }
      for (const record of records) sealRecord(record, headroom)
      yield records
    }
  }
}

/** Encodes a whole state into one buffer (small states, tests, test vectors). */
export async function encodeStateToBytes (input: UsxfStateInput, options: EncodeOptions): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const record of new UsxfEncoder(input, { ...options, headroom: 0 }).records()) parts.push(record)
  return new Uint8Array(Buffer.concat(parts))
}
