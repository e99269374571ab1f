import { InvalidInputError } from '../util/index.ts'

export interface SamplingOptions {
  /** 0 (default) is greedy. */
  temperature?: number
  /** Keep only the k most likely tokens (0 = all). */
  topK?: number
  /** Keep the smallest set of tokens whose probability reaches p (1 = all). */
  topP?: number
  /** > 1 discourages tokens already in the context (Hugging Face / CTRL rule). */
  repetitionPenalty?: number
  /** Seed of the sampling PRNG (random when absent). */
  seed?: number
}

export function validateSampling (options: SamplingOptions): Required<Omit<SamplingOptions, 'seed'>> & { seed: number } {
  const temperature = options.temperature ?? 0
  const topK = options.topK ?? 0
  const topP = options.topP ?? 1
  const repetitionPenalty = options.repetitionPenalty ?? 1
  if (!(temperature >= 0 && temperature <= 100)) throw new InvalidInputError('temperature must be in [0, 100]')
  if (!Number.isInteger(topK) || topK < 0) throw new InvalidInputError('topK must be a non-negative integer')
  if (!(topP > 0 && topP <= 1)) throw new InvalidInputError('topP must be in (0, 1]')
  if (!(repetitionPenalty > 0 && repetitionPenalty <= 100)) throw new InvalidInputError('repetitionPenalty must be in (0, 100]')
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32)
  if (!Number.isInteger(seed)) throw new InvalidInputError('seed must be an integer')
  return { temperature, topK, topP, repetitionPenalty, seed }
}

/** Picks the next token from logits. Deterministic for a given seed and input. */
export class Sampler {
  private readonly options: ReturnType<typeof validateSampling>
  private state: number

  constructor (options: SamplingOptions = {}) {
    this.options = validateSampling(options)
    this.state = this.options.seed >>> 0
  }

  sample (logits: Float32Array, context: readonly number[] = []): number {
    const { temperature, topK, topP, repetitionPenalty } = this.options
    let scores = logits
    if (repetitionPenalty !== 1 && context.length > 0) {
      scores = logits.slice()
      for (const token of new Set(context)) {
        if (token < 0 || token >= scores.length) continue
        scores[token] = scores[token] > 0 ? scores[token] / repetitionPenalty : scores[token] * repetitionPenalty
      }
    }
    if (temperature === 0) return argmax(scores)
    let max = -Infinity
    for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i]
    const weights = new Float64Array(scores.length)
    let total = 0
    for (let i = 0; i < scores.length; i++) {
      weights[i] = Math.exp((scores[i] - max) / temperature)
      total += weights[i]
    }
    if (topK === 0 && topP === 1) return this.pick(weights, null, total)
    // Only tokens within 1e-12 of the best can matter for top-k/top-p; sorting just those keeps a
    // 128k vocabulary cheap.
    const candidates: number[] = []
    for (let i = 0; i < weights.length; i++) if (weights[i] >= 1e-12) candidates.push(i)
    candidates.sort((a, b) => weights[b] - weights[a] || a - b)
    let keep = topK > 0 ? Math.min(topK, candidates.length) : candidates.length
    if (topP < 1) {
      let mass = 0
      for (let i = 0; i < keep; i++) {
        mass += weights[candidates[i]] / total
        if (mass >= topP) { keep = i + 1; break }
      }
    }
    const kept = candidates.slice(0, keep)
    return this.pick(weights, kept, kept.reduce((a, t) => a + weights[t], 0))
  }

  /** Draws an index with probability proportional to its weight (among `among`, or all). */
  private pick (weights: Float64Array, among: number[] | null, total: number): number {
    let r = this.random() * total
    const count = among === null ? weights.length : among.length
    for (let i = 0; i < count; i++) {
      const token = among === null ? i : among[i]
      r -= weights[token]
      if (r < 0) return token
    }
    return among === null ? argmax(Float32Array.from(weights)) : among[count - 1]
  }

  /** mulberry32: small, fast, seedable. */
  private random (): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function argmax (values: Float32Array): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i
  return best
}
