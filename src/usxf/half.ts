import { f16ToF32 } from '../model/index.ts'

/**
 * Fast IEEE binary16 and bfloat16 conversions for the codec's hot loops. f32 -> f16 rounds to
 * nearest even with integer arithmetic only on the normal path (after F. Giesen's
 * float_to_half_fast3_rtne); f16 -> f32 is a 64 Ki-entry table of f32 bit patterns. Both match
 * src/model's reference conversions bit for bit (test/usxf/codec.test.ts checks every f16 value).
 */
// The model module's conversion, viewed as bit patterns so decoding is integer copies.
const F16_BITS_TO_F32_BITS = new Uint32Array(f16ToF32(Uint16Array.from({ length: 65536 }, (_, i) => i)).buffer)

const scratchF = new Float32Array(1)
const scratchU = new Uint32Array(scratchF.buffer)
/** 0.5 * 2^-(14-... ) magic: adding it to a tiny float leaves the rounded half subnormal in the low bits. */
const DENORM_MAGIC_BITS = ((127 - 15) + (23 - 10) + 1) << 23
const DENORM_MAGIC = new Float32Array(new Uint32Array([DENORM_MAGIC_BITS]).buffer)[0]

/** One f32 bit pattern to f16 bits, round to nearest even, overflow to infinity, NaN kept quiet. */
export function f32BitsToF16Bits (bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  let f = bits & 0x7fffffff
  if (f >= 0x47800000) return sign | (f > 0x7f800000 ? 0x7e00 : 0x7c00)
  if (f < 0x38800000) {
    scratchU[0] = f
    scratchF[0] += DENORM_MAGIC
    return sign | ((scratchU[0] - DENORM_MAGIC_BITS) & 0xffff)
  }
  const mantissaOdd = (f >>> 13) & 1
  f += ((15 - 127) << 23) + 0xfff + mantissaOdd
  return sign | (f >>> 13)
}

/** f32 values (as their bit patterns) -> f16 bits. */
export function f32ToF16Bits (input: Uint32Array, out: Uint16Array): void {
  const n = input.length
  for (let i = 0; i < n; i++) {
    const bits = input[i]
    const f = bits & 0x7fffffff
    // the common case inline: a normal f16 result
    if (f >= 0x38800000 && f < 0x47800000) {
      out[i] = ((bits >>> 16) & 0x8000) | ((f + (((15 - 127) << 23) + 0xfff) + ((f >>> 13) & 1)) >>> 13)
    } else {
      out[i] = f32BitsToF16Bits(bits)
    }
  }
}

/** f16 bits -> f32 bit patterns. */
export function f16BitsToF32Bits (input: Uint16Array, out: Uint32Array): void {
  const table = F16_BITS_TO_F32_BITS
  const n = input.length
  for (let i = 0; i < n; i++) out[i] = table[input[i]]
}

/** bfloat16 bits -> f32 bit patterns. */
export function bf16BitsToF32Bits (input: Uint16Array, out: Uint32Array): void {
  const n = input.length
  for (let i = 0; i < n; i++) out[i] = input[i] << 16
}

/** f32 bit patterns -> bfloat16 bits, round to nearest even, NaN kept quiet. */
export function f32ToBf16Bits (input: Uint32Array, out: Uint16Array): void {
  const n = input.length
  for (let i = 0; i < n; i++) {
    const x = input[i]
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) { out[i] = (x >>> 16) | 0x40; continue }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16
  }
}
