import type { ModelSpec } from './config.ts'
import { requiredTensors } from './config.ts'
import { ropeInverseFrequencies } from './rope.ts'

/** Anything that yields a checkpoint tensor by Hugging Face name as f32 (a Checkpoint does). */
export interface TensorSource {
  read: (name: string) => Promise<Float32Array>
}

/** Refuses to load models whose f64 copy would exceed this (the reference is for tests). */
const MAX_REFERENCE_PARAMS = 64 * 1024 * 1024

/**
 * A plain float64 forward pass of a Llama-family decoder, written for clarity, used by tests to
 * check the ONNX stages. Keeps its own KV cache; feed tokens in order.
 */
export class ReferenceModel {
  readonly spec: ModelSpec
  private readonly weights: Map<string, Float64Array>
  private readonly keys: Float64Array[][]
  private readonly values: Float64Array[][]
  private readonly invFreq: Float64Array

  private constructor (spec: ModelSpec, weights: Map<string, Float64Array>) {
    this.spec = spec
    this.weights = weights
    this.keys = Array.from({ length: spec.numLayers }, () => [])
    this.values = Array.from({ length: spec.numLayers }, () => [])
    this.invFreq = ropeInverseFrequencies(spec)
  }

  static async load (spec: ModelSpec, source: TensorSource): Promise<ReferenceModel> {
    const weights = new Map<string, Float64Array>()
    let params = 0
    for (const { name, shape } of requiredTensors(spec)) {
      params += shape.reduce((a, b) => a * b, 1)
      if (params > MAX_REFERENCE_PARAMS) throw new RangeError(`the reference forward pass is limited to ${MAX_REFERENCE_PARAMS} parameters`)
      weights.set(name, Float64Array.from(await source.read(name)))
    }
    return new ReferenceModel(spec, weights)
  }

  get length (): number {
    return this.keys[0].length
  }

  reset (): void {
    for (const k of this.keys) k.length = 0
    for (const v of this.values) v.length = 0
  }

  /** Runs tokens through the model at the next positions; returns the logits of each. */
  forward (tokens: number[]): Float64Array[] {
    return tokens.map((token) => this.step(token))
  }

  private linear (x: Float64Array, name: string, bias: string | null): Float64Array {
    return linear(x, this.w(name), bias === null ? null : this.w(bias))
  }

  private w (name: string): Float64Array {
    const value = this.weights.get(name)
    if (value === undefined) throw new Error(`missing weight ${name}`)
    return value
  }

  private step (token: number): Float64Array {
    const s = this.spec
    const h = s.hiddenSize
    const d = s.headDim
    const position = this.length
    if (token < 0 || token >= s.vocabSize) throw new RangeError(`token ${token} outside the vocabulary`)
    const x = this.w('model.embed_tokens.weight').slice(token * h, (token + 1) * h)
    for (let l = 0; l < s.numLayers; l++) {
      const p = `model.layers.${l}.`
      const xn = rmsNorm(x, this.w(`${p}input_layernorm.weight`), s.rmsNormEps)
      const q = this.linear(xn, `${p}self_attn.q_proj.weight`, s.qkvBias ? `${p}self_attn.q_proj.bias` : null)
      const k = this.linear(xn, `${p}self_attn.k_proj.weight`, s.qkvBias ? `${p}self_attn.k_proj.bias` : null)
      const v = this.linear(xn, `${p}self_attn.v_proj.weight`, s.qkvBias ? `${p}self_attn.v_proj.bias` : null)
      for (let head = 0; head < s.numHeads; head++) this.rotate(q, head * d, position)
      for (let head = 0; head < s.numKvHeads; head++) this.rotate(k, head * d, position)
      this.keys[l].push(k)
      this.values[l].push(v)
      const attended = new Float64Array(s.numHeads * d)
      const group = s.numHeads / s.numKvHeads
      const scale = 1 / Math.sqrt(d)
      const length = this.keys[l].length
      for (let head = 0; head < s.numHeads; head++) {
        const kvHead = Math.floor(head / group)
        const scores = new Float64Array(length)
        let max = -Infinity
        for (let t = 0; t < length; t++) {
          const key = this.keys[l][t]
          let dot = 0
          for (let i = 0; i < d; i++) dot += q[head * d + i] * key[kvHead * d + i]
          scores[t] = dot * scale
          if (scores[t] > max) max = scores[t]
        }
        let sum = 0
        for (let t = 0; t < length; t++) {
          scores[t] = Math.exp(scores[t] - max)
          sum += scores[t]
        }
        for (let t = 0; t < length; t++) {
          const weight = scores[t] / sum
          const value = this.values[l][t]
          for (let i = 0; i < d; i++) attended[head * d + i] += weight * value[kvHead * d + i]
        }
      }
      const o = this.linear(attended, `${p}self_attn.o_proj.weight`, s.oBias ? `${p}self_attn.o_proj.bias` : null)
      for (let i = 0; i < h; i++) x[i] += o[i]
      const xn2 = rmsNorm(x, this.w(`${p}post_attention_layernorm.weight`), s.rmsNormEps)
      const gate = this.linear(xn2, `${p}mlp.gate_proj.weight`, null)
      const up = this.linear(xn2, `${p}mlp.up_proj.weight`, null)
      for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i]
      const down = this.linear(gate, `${p}mlp.down_proj.weight`, null)
      for (let i = 0; i < h; i++) x[i] += down[i]
    }
    const xf = rmsNorm(x, this.w('model.norm.weight'), s.rmsNormEps)
    return this.linear(xf, s.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight', null)
  }

  /** Rotate-half RoPE on one head's slice, in place. */
  private rotate (vector: Float64Array, offset: number, position: number): void {
    const half = this.spec.headDim / 2
    for (let i = 0; i < half; i++) {
      const angle = position * this.invFreq[i]
      const c = Math.cos(angle)
      const s = Math.sin(angle)
      const a = vector[offset + i]
      const b = vector[offset + i + half]
      vector[offset + i] = a * c - b * s
      vector[offset + i + half] = b * c + a * s
    }
  }
}

function rmsNorm (x: Float64Array, weight: Float64Array, eps: number): Float64Array {
  let sum = 0
  for (let i = 0; i < x.length; i++) sum += x[i] * x[i]
  const scale = 1 / Math.sqrt(sum / x.length + eps)
  const out = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) out[i] = x[i] * scale * weight[i]
  return out
}

/** y = W x (+ b) with W in Hugging Face [out, in] layout. */
function linear (x: Float64Array, weight: Float64Array, bias: Float64Array | null): Float64Array {
  const inputs = x.length
  const outputs = weight.length / inputs
  const y = new Float64Array(outputs)
  for (let o = 0; o < outputs; o++) {
    let acc = bias === null ? 0 : bias[o]
    const row = o * inputs
    for (let i = 0; i < inputs; i++) acc += weight[row + i] * x[i]
    y[o] = acc
  }
  return y
}
