import { dequantizeInt8, quantizeInt8 } from './blocks.ts'
import { crc32c } from './crc32c.ts'
import { UsxfChecksumError, UsxfFormatError, UsxfTruncatedError } from './errors.ts'
import { encodedElementBytes, quantizationCode, quantizationFromCode, type UsxfQuantization } from './format.ts'
import { f16BitsToF32Bits, f32ToF16Bits } from './half.ts'

/**
 * The compact USXF form for one step of activations on the inference hot path: a fixed 32-byte
 * header, the payload, and a CRC-32C over both. The model, layer boundary and signer are fixed
 * once per session (a signed USXF header at session open), so a step carries only what changes.
 */
export const FRAME_HEADER_BYTES = 32
export const FRAME_OVERHEAD = FRAME_HEADER_BYTES + 4
const FRAME_MAGIC_0 = 0x55 // 'U'
const FRAME_MAGIC_1 = 0x58 // 'X'
const FRAME_VERSION = 1

export interface ActivationFrame {
  /** The step's sequence number in its session (detects lost or replayed steps). */
  step: number
  /** Position of the first row. */
  positionStart: number
  rows: number
  width: number
  /** f32 [rows, width], row-major. */
  values: Float32Array
}

export interface FrameOptions {
  /** Default f16 (activations tolerate it; use none for exact f32). */
  quantization?: UsxfQuantization
  quantGroup?: number
}

export function frameBytes (rows: number, width: number, options: FrameOptions = {}): number {
  const quantization = options.quantization ?? 'f16'
  return FRAME_OVERHEAD + encodedElementBytes(rows * width, 'f32', quantization, options.quantGroup ?? 32)
}

export function encodeActivationFrame (frame: ActivationFrame, options: FrameOptions = {}): Uint8Array {
  const quantization = options.quantization ?? 'f16'
  const group = quantization === 'int8-block' ? options.quantGroup ?? 32 : 0
  const { rows, width, values } = frame
  const valid = (n: number, max: number): boolean => Number.isInteger(n) && n >= 0 && n <= max
  if (!valid(frame.step, 0xffffffff) || !valid(frame.positionStart, 0xffffffff) || !valid(rows, 0xffffffff) || !valid(width, 0xffffffff)) throw new UsxfFormatError('frame fields must be u32 integers')
  if (values.length !== rows * width) throw new UsxfFormatError(`a frame of ${rows} x ${width} needs ${rows * width} values, got ${values.length}`)
  if (quantization === 'int8-block' && !valid(group, 0xffff)) throw new UsxfFormatError('quantGroup must fit 16 bits')
  const payload = encodedElementBytes(values.length, 'f32', quantization, group)
  const out = new Uint8Array(FRAME_OVERHEAD + payload)
  const view = new DataView(out.buffer)
  out[0] = FRAME_MAGIC_0
  out[1] = FRAME_MAGIC_1
  out[2] = FRAME_VERSION
  out[3] = quantizationCode(quantization)
  view.setUint16(4, group, true)
  view.setUint16(6, 0, true)
  view.setUint32(8, frame.step, true)
  view.setUint32(12, frame.positionStart, true)
  view.setUint32(16, rows, true)
  view.setUint32(20, width, true)
  view.setUint32(24, payload, true)
  view.setUint32(28, 0, true)
  const body = FRAME_HEADER_BYTES
  if (quantization === 'none') {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), body)
  } else if (quantization === 'f16') {
    f32ToF16Bits(new Uint32Array(values.buffer, values.byteOffset, values.length), new Uint16Array(out.buffer, body, values.length))
  } else {
    const groups = Math.ceil(values.length / group)
    quantizeInt8(values, group, new Float32Array(out.buffer, body, groups), new Int8Array(out.buffer, body + groups * 4, values.length))
  }
  view.setUint32(out.length - 4, crc32c(out.subarray(0, out.length - 4)), true)
  return out
}

export interface FrameLimits {
  /** Refuse frames whose width differs (the session's hidden size). */
  width?: number
  maxRows?: number
}

/** Decodes and checks a frame; a copy is made when `bytes` is not 4-byte aligned. */
export function decodeActivationFrame (bytes: Uint8Array, limits: FrameLimits = {}): ActivationFrame & { quantization: UsxfQuantization } {
  if (bytes.byteLength < FRAME_OVERHEAD) throw new UsxfTruncatedError(`a frame is at least ${FRAME_OVERHEAD} bytes, got ${bytes.byteLength}`)
  if (bytes[0] !== FRAME_MAGIC_0 || bytes[1] !== FRAME_MAGIC_1) throw new UsxfFormatError('not a USXF activation frame (bad magic)')
  if (bytes[2] !== FRAME_VERSION) throw new UsxfFormatError(`activation frame version ${bytes[2]} is not supported`)
  // a copy realigns it (Buffer#slice would not copy: Node's Buffers share memory on slice)
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes)
  const view = new DataView(aligned.buffer, aligned.byteOffset, aligned.byteLength)
  const payload = view.getUint32(24, true)
  if (aligned.byteLength < FRAME_OVERHEAD + payload) throw new UsxfTruncatedError(`the frame declares ${payload} payload bytes; ${aligned.byteLength - FRAME_OVERHEAD} arrived`)
  if (aligned.byteLength > FRAME_OVERHEAD + payload) throw new UsxfFormatError('bytes after the frame')
  const expected = view.getUint32(aligned.byteLength - 4, true)
  const actual = crc32c(aligned.subarray(0, aligned.byteLength - 4))
  if (expected !== actual) throw new UsxfChecksumError('activation frame CRC-32C mismatch')
  const quantization = quantizationFromCode(aligned[3])
  if (quantization === undefined) throw new UsxfFormatError(`unknown quantization ${aligned[3]}`)
  const group = view.getUint16(4, true)
  const step = view.getUint32(8, true)
  const positionStart = view.getUint32(12, true)
  const rows = view.getUint32(16, true)
  const width = view.getUint32(20, true)
  if (limits.width !== undefined && width !== limits.width) throw new UsxfFormatError(`frame width ${width} != ${limits.width}`)
  if (limits.maxRows !== undefined && rows > limits.maxRows) throw new UsxfFormatError(`frame has ${rows} rows; the limit is ${limits.maxRows}`)
  if (quantization === 'int8-block' && group === 0) throw new UsxfFormatError('int8-block frame without a group size')
  const count = rows * width
  if (encodedElementBytes(count, 'f32', quantization, group) !== payload) throw new UsxfFormatError(`payload of ${payload} bytes does not hold ${rows} x ${width} ${quantization} values`)
  const values = new Float32Array(count)
  const body = aligned.byteOffset + FRAME_HEADER_BYTES
  if (quantization === 'none') {
    new Uint8Array(values.buffer).set(aligned.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + payload))
  } else if (quantization === 'f16') {
    f16BitsToF32Bits(new Uint16Array(aligned.buffer, body, count), new Uint32Array(values.buffer))
  } else {
    const groups = Math.ceil(count / group)
    dequantizeInt8(new Int8Array(aligned.buffer, body + groups * 4, count), new Float32Array(aligned.buffer, body, groups), group, 0, values)
  }
  return { step, positionStart, rows, width, values, quantization }
}
