import { UsxfFormatError } from './errors.ts'
import { DTYPE_BYTES, blockRows, type Layout, type UsxfDtype, type UsxfQuantization } from './format.ts'
import { bf16BitsToF32Bits, f16BitsToF32Bits, f32ToF16Bits } from './half.ts'

/** A plane's values: f32, or f16/bf16 bit patterns. Row r is [r * width, (r + 1) * width). */
export type PlaneData = Float32Array | Uint16Array

/**
 * Encodes and decodes token blocks. A block is, for every plane in order, the block's rows of that
 * plane; its values are then stored raw (the source dtype), as f16, or int8 in groups of
 * `group` values with one f32 scale each (all scales first, then the int8 values).
 */
export class BlockCoder {
  readonly layout: Layout
  readonly dtype: UsxfDtype
  readonly quantization: UsxfQuantization
  readonly group: number
  private scratch = new Float32Array(0)

  constructor (layout: Layout, dtype: UsxfDtype, quantization: UsxfQuantization, group: number) {
    this.layout = layout
    this.dtype = dtype
    this.quantization = quantization
    this.group = group
  }

  elementsOf (b: number): number {
    const { rowStart, rowEnd } = blockRows(this.layout, b)
    return this.layout.planes * (rowEnd - rowStart) * this.layout.width
  }

  /** Writes block `b` of `planes` into `out` (4-byte aligned, exactly the block's encoded size). */
  encode (planes: readonly PlaneData[], b: number, out: Uint8Array): void {
    const { rowStart, rowEnd } = blockRows(this.layout, b)
    const segment = (rowEnd - rowStart) * this.layout.width
    const from = rowStart * this.layout.width
    if (this.quantization === 'none' || (this.quantization === 'f16' && this.dtype === 'f16')) {
      const size = DTYPE_BYTES[this.dtype]
      for (let p = 0; p < planes.length; p++) {
        const plane = planes[p]
        out.set(new Uint8Array(plane.buffer, plane.byteOffset + from * size, segment * size), p * segment * size)
      }
      return
    }
    if (this.quantization === 'f16' && this.dtype === 'f32') {
      const halves = new Uint16Array(out.buffer, out.byteOffset, out.byteLength / 2)
      for (let p = 0; p < planes.length; p++) {
        const plane = planes[p] as Float32Array
        f32ToF16Bits(new Uint32Array(plane.buffer, plane.byteOffset + from * 4, segment), halves.subarray(p * segment, (p + 1) * segment))
      }
      return
    }
    if (this.quantization === 'int8-block' && this.dtype === 'f32' && segment % this.group === 0) {
      // groups never straddle two planes: quantize each plane's rows where they are
      const groups = planes.length * segment / this.group
      const scales = new Float32Array(out.buffer, out.byteOffset, groups)
      const quantized = new Int8Array(out.buffer, out.byteOffset + groups * 4, planes.length * segment)
      const perPlane = segment / this.group
      for (let p = 0; p < planes.length; p++) {
        quantizeInt8((planes[p] as Float32Array).subarray(from, from + segment), this.group, scales.subarray(p * perPlane, (p + 1) * perPlane), quantized.subarray(p * segment, (p + 1) * segment))
      }
      return
    }
    // Everything else goes through f32: gather the block, then convert or quantize it.
    const values = this.gatherF32(planes, from, segment)
    if (this.quantization === 'f16') {
      f32ToF16Bits(new Uint32Array(values.buffer, values.byteOffset, values.length), new Uint16Array(out.buffer, out.byteOffset, values.length))
      return
    }
    const groups = Math.ceil(values.length / this.group)
    quantizeInt8(values, this.group, new Float32Array(out.buffer, out.byteOffset, groups), new Int8Array(out.buffer, out.byteOffset + groups * 4, values.length))
  }

  /** Decodes block `b` from `bytes` (4-byte aligned) into f32 destination planes. */
  decode (bytes: Uint8Array, b: number, planes: readonly Float32Array[]): void {
    const { rowStart, rowEnd } = blockRows(this.layout, b)
    const segment = (rowEnd - rowStart) * this.layout.width
    const from = rowStart * this.layout.width
    if (this.quantization === 'none' && this.dtype === 'f32') {
      for (let p = 0; p < planes.length; p++) {
        const plane = planes[p]
        new Uint8Array(plane.buffer, plane.byteOffset + from * 4, segment * 4).set(bytes.subarray(p * segment * 4, (p + 1) * segment * 4))
      }
      return
    }
    if (this.quantization !== 'int8-block') {
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
      const convert = this.quantization === 'none' && this.dtype === 'bf16' ? bf16BitsToF32Bits : f16BitsToF32Bits
      for (let p = 0; p < planes.length; p++) {
        const plane = planes[p]
        convert(halves.subarray(p * segment, (p + 1) * segment), new Uint32Array(plane.buffer, plane.byteOffset + from * 4, segment))
      }
      return
    }
    const elements = planes.length * segment
    const groups = Math.ceil(elements / this.group)
    const scales = new Float32Array(bytes.buffer, bytes.byteOffset, groups)
    const quantized = new Int8Array(bytes.buffer, bytes.byteOffset + groups * 4, elements)
    for (let p = 0; p < planes.length; p++) {
      dequantizeInt8(quantized, scales, this.group, p * segment, planes[p].subarray(from, from + segment))
    }
  }

  private gatherF32 (planes: readonly PlaneData[], from: number, segment: number): Float32Array {
    const total = planes.length * segment
    if (this.scratch.length < total) this.scratch = new Float32Array(total)
    const values = this.scratch.subarray(0, total)
    for (let p = 0; p < planes.length; p++) {
      const target = values.subarray(p * segment, (p + 1) * segment)
      if (this.dtype === 'f32') {
        target.set((planes[p] as Float32Array).subarray(from, from + segment))
      } else {
        const bits = (planes[p] as Uint16Array).subarray(from, from + segment)
        const out = new Uint32Array(target.buffer, target.byteOffset, segment);
        (this.dtype === 'f16' ? f16BitsToF32Bits : bf16BitsToF32Bits)(bits, out)
      }
    }
    return values
  }
}

/**
 * int8 with one f32 scale per `group` values. For a group with largest magnitude m (computed in
 * double precision): scale = fround(m / 127); inverse = 127 / m; q = floor(x * inverse + 128.5) - 128
 * (round half up, with every operation an IEEE double operation, as written), 0 when m = 0.
 * Non-finite values cannot be represented and are refused.
 */
export function quantizeInt8 (values: Float32Array, group: number, scales: Float32Array, out: Int8Array): void {
  const n = values.length
  for (let g = 0, start = 0; start < n; g++, start += group) {
    const end = Math.min(n, start + group)
    let m = 0
    // a NaN (or infinities of both signs) makes the sum NaN; one infinity makes m infinite
    let sum = 0
    for (let i = start; i < end; i++) {
      const x = values[i]
      sum += x
      const a = x < 0 ? -x : x
      m = a > m ? a : m
    }
    if (sum !== sum || m === Infinity) throw new UsxfFormatError('int8-block cannot carry NaN or infinities')
    scales[g] = Math.fround(m / 127)
    if (m === 0) {
      out.fill(0, start, end)
      continue
    }
    const inverse = 127 / m
    for (let i = start; i < end; i++) out[i] = ((values[i] * inverse + 128.5) | 0) - 128
  }
}

/** Dequantizes `out.length` values starting at flat element `offset`. */
export function dequantizeInt8 (quantized: Int8Array, scales: Float32Array, group: number, offset: number, out: Float32Array): void {
  const end = offset + out.length
  let i = offset
  while (i < end) {
    const g = Math.floor(i / group)
    const stop = Math.min(end, (g + 1) * group)
    const scale = scales[g]
    for (; i < stop; i++) out[i - offset] = quantized[i] * scale
  }
}
