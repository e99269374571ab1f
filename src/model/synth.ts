import { mkdir, open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InvalidInputError } from '../util/index.ts'
import { parseModelConfig, requiredTensors, type ModelSpec } from './config.ts'
import { CHECKPOINT_DTYPE_BYTES, f32ToBf16, f32ToF16, type CheckpointDtype } from './dtype.ts'
import { safetensorsHeader, type SafetensorsEntry } from './safetensors.ts'

export type SynthShape = 'tiny' | 'llama-1b' | 'llama-8b' | 'llama-70b'
export const SYNTH_SHAPES: SynthShape[] = ['tiny', 'llama-1b', 'llama-8b', 'llama-70b']

export interface SynthOptions {
  shape: SynthShape
  out: string
  seed?: number
  /** Override the layer count (e.g. a 2-layer 8B-shaped model). */
  layers?: number
  family?: 'llama' | 'mistral' | 'qwen2'
  dtype?: CheckpointDtype
  /** Split the weights into shards of at most this many bytes (with model.safetensors.index.json). */
  shardBytes?: number
  tieWordEmbeddings?: boolean
  /** Overrides of the shape's config.json fields. */
  config?: Record<string, unknown>
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

const SHAPES: Record<SynthShape, Record<string, unknown>> = {
  tiny: {
    hidden_size: 64, intermediate_size: 176, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4,
    vocab_size: 256, max_position_embeddings: 512, rope_theta: 10000, tie_word_embeddings: false
  },
  // Llama 3.2 1B
  'llama-1b': {
    hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8,
    vocab_size: 128256, max_position_embeddings: 131072, rope_theta: 500000, tie_word_embeddings: true,
    rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
  },
  // Llama 3.1 8B
  'llama-8b': {
    hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8,
    vocab_size: 128256, max_position_embeddings: 131072, rope_theta: 500000, tie_word_embeddings: false,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
  },
  // Llama 3.1 70B
  'llama-70b': {
    hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8,
    vocab_size: 128256, max_position_embeddings: 131072, rope_theta: 500000, tie_word_embeddings: false,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
  }
}

/** The config.json a synthetic model of this shape gets. */
export function synthConfig (options: Pick<SynthOptions, 'shape' | 'layers' | 'family' | 'tieWordEmbeddings' | 'config'>): Record<string, unknown> {
  if (!SYNTH_SHAPES.includes(options.shape)) throw new InvalidInputError(`unknown shape ${options.shape}; expected one of ${SYNTH_SHAPES.join(', ')}`)
  const family = options.family ?? 'llama'
  const architecture = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }[family]
  const config: Record<string, unknown> = {
    architectures: [architecture],
    model_type: family,
    ...SHAPES[options.shape],
    rms_norm_eps: 1e-5,
    hidden_act: 'silu',
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32'
  }
  if (options.layers !== undefined) {
    if (!Number.isInteger(options.layers) || options.layers < 1 || options.layers > 1024) throw new InvalidInputError('layers must be an integer in 1..1024')
    config.num_hidden_layers = options.layers
  }
  if (options.tieWordEmbeddings !== undefined) config.tie_word_embeddings = options.tieWordEmbeddings
  Object.assign(config, options.config ?? {})
  return config
}

/**
 * Writes a seeded random checkpoint in Hugging Face layout (config.json, safetensors, a word-level
 * tokenizer.json whose pieces are t<id>). Weights are drawn with trained-like scales: embeddings
 * ~N(0, 0.02), projections ~N(0, 1/fan_in) with rare 6x outliers, norms near 1.
 * Streams tensor by tensor, so any shape can be written with little memory.
 */
export async function synthesizeModel (options: SynthOptions): Promise<{ spec: ModelSpec, bytes: number }> {
  const config = synthConfig(options)
  const configText = JSON.stringify(config, null, 2)
  const spec = parseModelConfig(configText)
  const dtype = options.dtype ?? (options.shape === 'tiny' ? 'F32' : 'BF16')
  config.torch_dtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype]
  await mkdir(options.out, { recursive: true })
  await writeFile(join(options.out, 'config.json'), JSON.stringify(config, null, 2))
  await writeFile(join(options.out, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2))
  await writeFile(join(options.out, 'tokenizer.json'), JSON.stringify(wordLevelTokenizer(spec.vocabSize)))
  await writeFile(join(options.out, 'tokenizer_config.json'), JSON.stringify({
    bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>',
    chat_template: "{{ bos_token }}{% for message in messages %}{{ message['content'] }} {% endfor %}"
  }, null, 2))

  const entries: SafetensorsEntry[] = requiredTensors(spec).map(({ name, shape }) => ({ name, dtype, shape }))
  const sizeOf = (e: SafetensorsEntry): number => e.shape.reduce((a, b) => a * b, 1) * CHECKPOINT_DTYPE_BYTES[e.dtype]
  const totalBytes = entries.reduce((a, e) => a + sizeOf(e), 0)
  const shards: SafetensorsEntry[][] = [[]]
  let shardSize = 0
  for (const entry of entries) {
    if (options.shardBytes !== undefined && shardSize > 0 && shardSize + sizeOf(entry) > options.shardBytes) {
      shards.push([])
      shardSize = 0
    }
    shards[shards.length - 1].push(entry)
    shardSize += sizeOf(entry)
  }
  const rng = new NormalSource(options.seed ?? 1)
  let done = 0
  const weightMap: Record<string, string> = {}
  for (let s = 0; s < shards.length; s++) {
    const file = shards.length === 1 && options.shardBytes === undefined ? 'model.safetensors' : `model-${String(s + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`
    const { bytes: header } = safetensorsHeader(shards[s], { format: 'pt' })
    const handle = await open(join(options.out, file), 'w')
    try {
      let position = 0
      const write = async (bytes: Uint8Array): Promise<void> => {
        await handle.write(bytes, 0, bytes.byteLength, position)
        position += bytes.byteLength
      }
      await write(header)
      for (const entry of shards[s]) {
        weightMap[entry.name] = file
        const count = entry.shape.reduce((a, b) => a * b, 1)
        const { std, mean } = scaleOf(entry.name, entry.shape)
        const chunk = 1 << 22
        for (let at = 0; at < count; at += chunk) {
          const values = rng.fill(new Float32Array(Math.min(chunk, count - at)), mean, std, entry.shape.length === 2)
          const bytes = dtype === 'F32' ? values : dtype === 'F16' ? f32ToF16(values) : f32ToBf16(values)
          await write(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))
          done += bytes.byteLength
          options.onProgress?.(done, totalBytes)
        }
      }
    } finally {
      await handle.close()
    }
  }
  if (shards.length > 1 || options.shardBytes !== undefined) {
    await writeFile(join(options.out, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2))
  }
  return { spec, bytes: totalBytes }
}

function scaleOf (name: string, shape: number[]): { mean: number, std: number } {
  if (name.endsWith('norm.weight')) return { mean: 1, std: 0.1 }
  if (name.endsWith('.bias')) return { mean: 0, std: 0.05 }
  if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return { mean: 0, std: name === 'lm_head.weight' ? 1 / Math.sqrt(shape[1]) : 0.02 }
  return { mean: 0, std: 1 / Math.sqrt(shape[1]) }
}

/** Seeded normals: xoshiro128** bits indexing a 64 Ki-entry table of normal quantiles. */
class NormalSource {
  private s0: number
  private s1: number
  private s2: number
  private s3: number
  private static table: Float32Array | null = null

  constructor (seed: number) {
    let x = seed >>> 0
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
      return (z ^ (z >>> 16)) >>> 0
    }
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next()
    if (NormalSource.table === null) {
      const t = new Float32Array(65536)
      for (let i = 0; i < t.length; i++) t[i] = inverseNormal((i + 0.5) / t.length)
      NormalSource.table = t
    }
  }

  private bits (): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0
    const t = this.s1 << 9
    this.s2 ^= this.s0; this.s3 ^= this.s1; this.s1 ^= this.s2; this.s0 ^= this.s3
    this.s2 ^= t
    this.s3 = rotl(this.s3, 11)
    return result
  }

  fill (out: Float32Array, mean: number, std: number, outliers: boolean): Float32Array {
    const table = NormalSource.table as Float32Array
    for (let i = 0; i < out.length; i += 2) {
      const r = this.bits()
      out[i] = mean + std * table[r & 0xffff]
      if (i + 1 < out.length) out[i + 1] = mean + std * table[r >>> 16]
    }
    if (outliers) {
      // About one value in 1024 is a 6x outlier, as in trained projections.
      for (let i = this.bits() & 1023; i < out.length; i += 1 + (this.bits() & 2047)) out[i] *= 6
    }
    return out
  }
}

function rotl (x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

/** Acklam's rational approximation of the standard normal quantile function. */
function inverseNormal (p: number): number {
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239]
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1]
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783]
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416]
  const low = 0.02425
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p))
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
  }
  if (p > 1 - low) return -inverseNormal(1 - p)
  const q = p - 0.5
  const r = q * q
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
}

/** A word-level tokenizer.json whose pieces are t<id> (ids 0-2 are <unk>, <s>, </s>). */
export function wordLevelTokenizer (vocabSize: number): Record<string, unknown> {
  const special = ['<unk>', '<s>', '</s>']
  const vocab: Record<string, number> = {}
  for (let i = 0; i < vocabSize; i++) vocab[i < special.length ? special[i] : `t${i}`] = i
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: '<unk>' }
  }
}
