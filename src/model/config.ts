import { z } from 'zod'
import { ModelConfigError, UnsupportedModelError } from './errors.ts'

export type ModelFamily = 'llama' | 'mistral' | 'qwen2'

export interface RopeScaling {
  type: 'llama3' | 'linear'
  factor: number
  lowFreqFactor: number
  highFreqFactor: number
  originalMaxPositions: number
}

/** The normalized description of a Llama-family decoder that every other part of the engine uses. */
export interface ModelSpec {
  family: ModelFamily
  architecture: string
  hiddenSize: number
  intermediateSize: number
  numLayers: number
  numHeads: number
  numKvHeads: number
  headDim: number
  vocabSize: number
  maxPositions: number
  rmsNormEps: number
  ropeTheta: number
  ropeScaling: RopeScaling | null
  tieWordEmbeddings: boolean
  /** q/k/v projections carry biases (Qwen2, or Llama with attention_bias). */
  qkvBias: boolean
  /** o_proj carries a bias (Llama with attention_bias). */
  oBias: boolean
  bosTokenId: number | null
  eosTokenIds: number[]
}

const MAX_CONFIG_BYTES = 1024 * 1024
const positiveInt = (max: number) => z.number().int().positive().max(max)
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()).max(64), z.null()]).optional()

const ropeScalingSchema = z.object({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  factor: z.number().positive().max(1024).optional(),
  low_freq_factor: z.number().positive().optional(),
  high_freq_factor: z.number().positive().optional(),
  original_max_position_embeddings: z.number().int().positive().optional()
}).passthrough()

const configSchema = z.object({
  architectures: z.array(z.string()).max(8).optional(),
  model_type: z.string(),
  hidden_size: positiveInt(65536),
  intermediate_size: positiveInt(1 << 20),
  num_hidden_layers: positiveInt(1024),
  num_attention_heads: positiveInt(1024),
  num_key_value_heads: positiveInt(1024).optional(),
  head_dim: positiveInt(1024).nullable().optional(),
  vocab_size: positiveInt(1 << 22),
  max_position_embeddings: positiveInt(1 << 24).optional(),
  rms_norm_eps: z.number().positive().max(1).optional(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: ropeScalingSchema.nullable().optional(),
  hidden_act: z.string().optional(),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  bos_token_id: tokenIds,
  eos_token_id: tokenIds,
  torch_dtype: z.string().nullable().optional(),
  use_sliding_window: z.boolean().optional(),
  sliding_window: z.number().int().positive().nullable().optional()
}).passthrough()

const FAMILIES: Record<string, { family: ModelFamily, architecture: string }> = {
  llama: { family: 'llama', architecture: 'LlamaForCausalLM' },
  mistral: { family: 'mistral', architecture: 'MistralForCausalLM' },
  qwen2: { family: 'qwen2', architecture: 'Qwen2ForCausalLM' }
}

/** Parses config.json text into a ModelSpec; throws ModelConfigError or UnsupportedModelError. */
export function parseModelConfig (text: string): ModelSpec {
  if (text.length > MAX_CONFIG_BYTES) throw new ModelConfigError(`config.json is larger than ${MAX_CONFIG_BYTES} bytes`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ModelConfigError('config.json is not valid JSON', { cause: err })
  }
  if (json !== null && typeof json === 'object' && 'model_type' in json && typeof json.model_type === 'string' && !(json.model_type in FAMILIES)) {
    throw new UnsupportedModelError(`model_type "${json.model_type}" is not supported (supported: ${Object.keys(FAMILIES).join(', ')})`)
  }
  const parsed = configSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new ModelConfigError(`config.json: ${issue.path.join('.') || '(root)'}: ${issue.message}`)
  }
  const c = parsed.data
  const known = FAMILIES[c.model_type]
  const architecture = c.architectures?.[0] ?? known.architecture
  if (architecture !== known.architecture) {
    throw new UnsupportedModelError(`architecture ${architecture} is not supported for model_type ${c.model_type} (expected ${known.architecture})`)
  }
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') throw new UnsupportedModelError(`hidden_act "${c.hidden_act}" is not supported (only silu)`)
  if (c.mlp_bias === true) throw new UnsupportedModelError('mlp_bias is not supported')
  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads
  if (c.num_attention_heads % numKvHeads !== 0) {
    throw new ModelConfigError(`num_attention_heads (${c.num_attention_heads}) is not a multiple of num_key_value_heads (${numKvHeads})`)
  }
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads
  if (!Number.isInteger(headDim)) throw new ModelConfigError(`hidden_size (${c.hidden_size}) is not a multiple of num_attention_heads (${c.num_attention_heads})`)
  if (headDim % 2 !== 0) throw new ModelConfigError(`head dimension ${headDim} is odd; rotary embeddings need an even one`)
  let ropeScaling: RopeScaling | null = null
  if (c.rope_scaling != null) {
    const kind = c.rope_scaling.rope_type ?? c.rope_scaling.type
    const maxPositions = c.max_position_embeddings ?? 2048
    if (kind === 'llama3') {
      const s = c.rope_scaling
      if (s.factor === undefined || s.low_freq_factor === undefined || s.high_freq_factor === undefined || s.original_max_position_embeddings === undefined) {
        throw new ModelConfigError('rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings')
      }
      if (s.high_freq_factor <= s.low_freq_factor) throw new ModelConfigError('rope_scaling: high_freq_factor must exceed low_freq_factor')
      ropeScaling = { type: 'llama3', factor: s.factor, lowFreqFactor: s.low_freq_factor, highFreqFactor: s.high_freq_factor, originalMaxPositions: s.original_max_position_embeddings }
    } else if (kind === 'linear') {
      if (c.rope_scaling.factor === undefined) throw new ModelConfigError('rope_scaling linear needs factor')
      ropeScaling = { type: 'linear', factor: c.rope_scaling.factor, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositions: maxPositions }
    } else if (kind !== 'default') {
      throw new UnsupportedModelError(`rope_scaling type "${String(kind)}" is not supported (supported: llama3, linear)`)
    }
  }
  const ids = (v: number | number[] | null | undefined): number[] => v == null ? [] : Array.isArray(v) ? v : [v]
  const eosTokenIds = ids(c.eos_token_id)
  const bos = ids(c.bos_token_id)
  for (const id of [...eosTokenIds, ...bos]) {
    if (id >= c.vocab_size) throw new ModelConfigError(`special token id ${id} is outside the vocabulary (${c.vocab_size})`)
  }
  let maxPositions = c.max_position_embeddings ?? 2048
  // Sliding-window attention equals full attention while the context fits the window, so cap
  // the context there instead of implementing the window.
  const window = c.sliding_window ?? null
  if (window !== null && (c.model_type === 'mistral' || c.use_sliding_window === true)) maxPositions = Math.min(maxPositions, window)
  return {
    family: known.family,
    architecture,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads,
    headDim,
    vocabSize: c.vocab_size,
    maxPositions,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? 10000,
    ropeScaling,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias: c.model_type === 'qwen2' ? true : c.attention_bias === true,
    oBias: c.model_type !== 'qwen2' && c.attention_bias === true,
    bosTokenId: bos[0] ?? null,
    eosTokenIds
  }
}

export interface TensorRequirement {
  name: string
  shape: number[]
}

/** The Hugging Face tensor names and shapes a checkpoint of this spec must contain. */
export function requiredTensors (spec: ModelSpec): TensorRequirement[] {
  const { hiddenSize: h, intermediateSize: i, numHeads, numKvHeads, headDim: d, vocabSize: v } = spec
  const out: TensorRequirement[] = [{ name: 'model.embed_tokens.weight', shape: [v, h] }]
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}.`
    out.push({ name: `${p}input_layernorm.weight`, shape: [h] })
    out.push({ name: `${p}self_attn.q_proj.weight`, shape: [numHeads * d, h] })
    out.push({ name: `${p}self_attn.k_proj.weight`, shape: [numKvHeads * d, h] })
    out.push({ name: `${p}self_attn.v_proj.weight`, shape: [numKvHeads * d, h] })
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [h, numHeads * d] })
    if (spec.qkvBias) {
      out.push({ name: `${p}self_attn.q_proj.bias`, shape: [numHeads * d] })
      out.push({ name: `${p}self_attn.k_proj.bias`, shape: [numKvHeads * d] })
      out.push({ name: `${p}self_attn.v_proj.bias`, shape: [numKvHeads * d] })
    }
    if (spec.oBias) out.push({ name: `${p}self_attn.o_proj.bias`, shape: [h] })
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [h] })
    out.push({ name: `${p}mlp.gate_proj.weight`, shape: [i, h] })
    out.push({ name: `${p}mlp.up_proj.weight`, shape: [i, h] })
    out.push({ name: `${p}mlp.down_proj.weight`, shape: [h, i] })
  }
  out.push({ name: 'model.norm.weight', shape: [h] })
  if (!spec.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [v, h] })
  return out
}
