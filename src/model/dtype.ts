/** Storage dtypes of checkpoint tensors (safetensors names). */
export type CheckpointDtype = 'F32' | 'F16' | 'BF16'

export const CHECKPOINT_DTYPE_BYTES: Record<CheckpointDtype, number> = { F32: 4, F16: 2, BF16: 2 }

const F16_TO_F32 = buildF16Table()

function buildF16Table (): Float32Array {
  const table = new Float32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) !== 0 ? -1 : 1
    const exponent = (h >>> 10) & 0x1f
    const mantissa = h & 0x3ff
    let value: number
    if (exponent === 0) value = mantissa * 2 ** -24
    else if (exponent === 31) value = mantissa === 0 ? Infinity : NaN
    else value = (1 + mantissa / 1024) * 2 ** (exponent - 15)
    table[h] = sign * value
  }
  return table
}

export function f16ToF32 (bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array {
  for (let i = 0; i < bits.length; i++) out[i] = F16_TO_F32[bits[i]]
  return out
}

export function bf16ToF32 (bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length)
  for (let i = 0; i < bits.length; i++) words[i] = bits[i] << 16
  return out
}

/** f32 -> IEEE binary16 bits, round to nearest even, overflow to infinity. */
export function f32ToF16 (values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length)
  for (let i = 0; i < words.length; i++) out[i] = f32BitsToF16(words[i])
  return out
}

function f32BitsToF16 (x: number): number {
  const sign = (x >>> 16) & 0x8000
  const exponent = (x >>> 23) & 0xff
  let mantissa = x & 0x7fffff
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0)
  const e = exponent - 127 + 15
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mantissa |= 0x800000
    const shift = 14 - e
    let half = mantissa >>> shift
    const rest = mantissa & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    if (rest > halfway || (rest === halfway && (half & 1) !== 0)) half++
    return sign | half
  }
  let half = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) !== 0)) half++
  return sign | half
}

/** f32 -> bfloat16 bits, round to nearest even. */
export function f32ToBf16 (values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length)
  for (let i = 0; i < words.length; i++) {
    const x = words[i]
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) { out[i] = (x >>> 16) | 0x40; continue }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16
  }
  return out
}

/** Decodes raw little-endian checkpoint bytes to f32. `bytes` must be aligned for its dtype or is copied. */
export function decodeToF32 (dtype: CheckpointDtype, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const count = bytes.byteLength / CHECKPOINT_DTYPE_BYTES[dtype]
  const target = out ?? new Float32Array(count)
  const aligned = bytes.byteOffset % CHECKPOINT_DTYPE_BYTES[dtype] === 0 ? bytes : bytes.slice()
  if (dtype === 'F32') {
    target.set(new Float32Array(aligned.buffer, aligned.byteOffset, count))
    return target
  }
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, count)
  return dtype === 'F16' ? f16ToF32(halves, target) : bf16ToF32(halves, target)
}
