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
    let candidates = Array.from(scores.keys())
    candidates.sort((a, b) => scores[b] - scores[a] || a - b)
    if (topK > 0 && topK < candidates.length) candidates = candidates.slice(0, topK)
    const max = scores[candidates[0]]
    const weights = candidates.map((t) => Math.exp((scores[t] - max) / temperature))
    const total = weights.reduce((a, w) => a + w, 0)
    let keep = candidates.length
    if (topP < 1) {
      let mass = 0
      for (let i = 0; i < candidates.length; i++) {
        mass += weights[i] / total
        if (mass >= topP) { keep = i + 1; break }
      }
    }
    const kept = weights.slice(0, keep).reduce((a, w) => a + w, 0)
    let r = this.random() * kept
    for (let i = 0; i < keep; i++) {
      r -= weights[i]
      if (r < 0) return candidates[i]
    }
    return candidates[keep - 1]
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
