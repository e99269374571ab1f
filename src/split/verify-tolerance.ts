import type { UsxfQuantization } from '../usxf/index.ts'

/** The USXF int8-block group the client's frames use (encodeActivationFrame's default). */
const INT8_GROUP = 32
/** Smallest f16 step (the subnormal spacing, 2^-24). */
const F16_MIN_STEP = 2 ** -24
/** Below this an f16 value is subnormal and its step is F16_MIN_STEP (2^-14). */
const F16_MIN_NORMAL = 2 ** -14

/**
 * Default compute tolerance, relative: two honest servers (or a server and the client's own
 * stage) run the same span with different thread counts and batch shapes (a catch-up runs many
 * rows in one step where the primary ran one row per step), which reorders float sums. That moves
 * f32 results by about 1e-6 of their magnitude; 1e-3 leaves a wide margin and stays below a
 * tenth of a percent, about two f16 rounding steps.
 */
export const DEFAULT_RELATIVE_TOLERANCE = 1e-3

export interface ActivationComparison {
  /** Every value within its allowed difference. */
  ok: boolean
  /** Largest |a - b| seen. */
  maxAbsDiff: number
  /** Largest |a - b| / allowed; above 1 is a mismatch (Infinity for NaN or an infinite value). */
  ratio: number
  /** First row (0-based in the compared block) with a value over its allowance, or -1. */
  firstBadRow: number
}

/**
 * One f16 rounding step at magnitude m: each side rounds its own result to the nearest f16, so
 * honest replies differ by at most one step at the larger magnitude.
 */
function f16Step (m: number): number {
  if (m < F16_MIN_NORMAL) return F16_MIN_STEP
  return 2 ** (Math.floor(Math.log2(m)) - 10)
}

/**
 * Compares two blocks of activation rows (`width` values each) that should be the same span's
 * output for the same inputs. The allowance of one value is what the wire quantization can move
 * it, plus the compute tolerance:
 *
 *   allowed = q + relative × (max(|a|, |b|) + rms of the row)
 *
 * with q = 0 for f32 (`none`), one f16 step at max(|a|, |b|) for `f16`, and one int8 level (group
 * max / 127) for `int8-block` (each side rounds to within half a level of its own scale). The
 * row's rms term covers values near zero, whose rounding differences scale with the row, not
 * with themselves.
 */
export function compareActivations (a: Float32Array, b: Float32Array, width: number, quantization: UsxfQuantization, relative: number): ActivationComparison {
  if (a.length !== b.length || a.length % width !== 0) return { ok: false, maxAbsDiff: Infinity, ratio: Infinity, firstBadRow: 0 }
  const rows = a.length / width
  let maxAbsDiff = 0
  let ratio = 0
  let firstBadRow = -1
  for (let r = 0; r < rows; r++) {
    const base = r * width
    let sa = 0
    let sb = 0
    for (let i = base; i < base + width; i++) { sa += a[i] * a[i]; sb += b[i] * b[i] }
    const rms = Math.sqrt(Math.max(sa, sb) / width)
    let rowRatio = 0
    for (let g = 0; g < width; g += INT8_GROUP) {
      const end = base + Math.min(width, g + INT8_GROUP)
      let groupMax = 0
      if (quantization === 'int8-block') {
        for (let i = base + g; i < end; i++) groupMax = Math.max(groupMax, Math.abs(a[i]), Math.abs(b[i]))
      }
      for (let i = base + g; i < end; i++) {
        const x = a[i]
        const y = b[i]
        const diff = Math.abs(x - y)
        if (!Number.isFinite(x) || !Number.isFinite(y) || Number.isNaN(diff)) { rowRatio = Infinity; maxAbsDiff = Infinity; continue }
        const m = Math.max(Math.abs(x), Math.abs(y))
        const q = quantization === 'f16' ? f16Step(m) : quantization === 'int8-block' ? groupMax / 127 : 0
        const allowed = q + relative * (m + rms)
        const r2 = allowed > 0 ? diff / allowed : (diff > 0 ? Infinity : 0)
        if (r2 > rowRatio) rowRatio = r2
        if (diff > maxAbsDiff) maxAbsDiff = diff
      }
    }
    if (rowRatio > 1 && firstBadRow < 0) firstBadRow = r
    if (rowRatio > ratio) ratio = rowRatio
  }
  return { ok: firstBadRow < 0, maxAbsDiff, ratio, firstBadRow }
}
