import type { ModelSpec } from './config.ts'

/** Rotary inverse frequencies (head_dim / 2 of them), with llama3 or linear scaling applied. */
export function ropeInverseFrequencies (spec: Pick<ModelSpec, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const half = spec.headDim / 2
  const inv = new Float64Array(half)
  for (let i = 0; i < half; i++) inv[i] = 1 / spec.ropeTheta ** ((2 * i) / spec.headDim)
  const s = spec.ropeScaling
  if (s === null) return inv
  if (s.type === 'linear') return inv.map((f) => f / s.factor)
  const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor
  const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f
    if (wavelen < highFreqWavelen) return f
    if (wavelen > lowFreqWavelen) return f / s.factor
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
    return (1 - smooth) * (f / s.factor) + smooth * f
  })
}

/**
 * cos and sin tables [positions, headDim] in the rotate-half layout Hugging Face uses
 * (the half-dimension frequencies repeated twice).
 */
export function ropeTables (spec: Pick<ModelSpec, 'headDim' | 'ropeTheta' | 'ropeScaling'>, positions: number): { cos: Float64Array, sin: Float64Array } {
  const inv = ropeInverseFrequencies(spec)
  const d = spec.headDim
  const half = d / 2
  const cos = new Float64Array(positions * d)
  const sin = new Float64Array(positions * d)
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inv[i]
      const c = Math.cos(angle)
      const s = Math.sin(angle)
      cos[p * d + i] = c
      cos[p * d + i + half] = c
      sin[p * d + i] = s
      sin[p * d + i + half] = s
    }
  }
  return { cos, sin }
}
