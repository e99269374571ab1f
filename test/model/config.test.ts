import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseModelConfig, requiredTensors, ropeInverseFrequencies, ModelConfigError, UnsupportedModelError } from '../../src/model/index.ts'

const llama = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2,
  num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512, max_position_embeddings: 512, rms_norm_eps: 1e-5, hidden_act: 'silu'
}
const parse = (over: Record<string, unknown>) => parseModelConfig(JSON.stringify({ ...llama, ...over }))

test('parses Llama with GQA and defaults', () => {
  const spec = parse({})
  assert.equal(spec.family, 'llama')
  assert.equal(spec.headDim, 8)
  assert.equal(spec.numKvHeads, 4)
  assert.equal(spec.tieWordEmbeddings, false)
  assert.equal(spec.qkvBias, false)
  assert.equal(requiredTensors(spec).filter((t) => t.name.includes('k_proj'))[0].shape.join('x'), '32x64')
  assert.ok(requiredTensors(spec).some((t) => t.name === 'lm_head.weight'))
  assert.ok(!requiredTensors(parse({ tie_word_embeddings: true })).some((t) => t.name === 'lm_head.weight'))
})

test('Qwen2 carries q/k/v biases; Llama attention_bias adds o bias too', () => {
  const qwen = parse({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' })
  assert.equal(qwen.qkvBias, true)
  assert.equal(qwen.oBias, false)
  assert.ok(requiredTensors(qwen).some((t) => t.name === 'model.layers.1.self_attn.v_proj.bias'))
  const biased = parse({ attention_bias: true })
  assert.equal(biased.oBias, true)
})

test('Mistral sliding window caps the context', () => {
  const spec = parse({ architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 32768, sliding_window: 4096 })
  assert.equal(spec.family, 'mistral')
  assert.equal(spec.maxPositions, 4096)
})

test('llama3 rope scaling follows the Hugging Face rule', () => {
  const spec = parse({ hidden_size: 2048, num_attention_heads: 32, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } })
  const inv = ropeInverseFrequencies(spec)
  const plain = ropeInverseFrequencies({ ...spec, ropeScaling: null })
  assert.equal(inv[0], plain[0]) // high frequencies untouched
  assert.ok(Math.abs(inv[31] - plain[31] / 32) < 1e-18) // low frequencies divided by factor
  const wavelen = (f: number) => 2 * Math.PI / f
  const medium = [...plain.keys()].find((i) => wavelen(plain[i]) > 8192 / 4 && wavelen(plain[i]) < 8192)
  assert.ok(medium !== undefined)
  assert.ok(inv[medium] < plain[medium] && inv[medium] > plain[medium] / 32)
})

test('refuses unsupported architectures and features', () => {
  assert.throws(() => parse({ model_type: 'gpt2' }), UnsupportedModelError)
  assert.throws(() => parse({ architectures: ['LlamaForSequenceClassification'] }), UnsupportedModelError)
  assert.throws(() => parse({ hidden_act: 'gelu' }), UnsupportedModelError)
  assert.throws(() => parse({ rope_scaling: { type: 'yarn', factor: 4 } }), UnsupportedModelError)
})

test('refuses bad configs with ERR_MODEL_CONFIG', () => {
  for (const bad of [
    { hidden_size: -1 },
    { num_key_value_heads: 3 },
    { hidden_size: 60 },
    { vocab_size: 'big' },
    { eos_token_id: 9999 },
    { rope_scaling: { rope_type: 'llama3', factor: 8 } }
  ]) {
    assert.throws(() => parse(bad), (err: unknown) => err instanceof ModelConfigError && err.code === 'ERR_MODEL_CONFIG', JSON.stringify(bad))
  }
  assert.throws(() => parseModelConfig('{not json'), ModelConfigError)
  assert.throws(() => parseModelConfig(JSON.stringify({ model_type: 'llama' })), ModelConfigError)
})

test('synthetic shapes have the real models\' configs', async () => {
  const { synthConfig, SYNTH_SHAPES } = await import('../../src/model/index.ts')
  const specs = Object.fromEntries(SYNTH_SHAPES.map((shape) => [shape, parseModelConfig(JSON.stringify(synthConfig({ shape })))]))
  assert.deepEqual([specs['llama-1b'].numLayers, specs['llama-1b'].hiddenSize, specs['llama-1b'].numKvHeads, specs['llama-1b'].tieWordEmbeddings], [16, 2048, 8, true])
  assert.equal(specs['llama-1b'].ropeScaling?.type, 'llama3')
  assert.deepEqual([specs['llama-8b'].numLayers, specs['llama-8b'].intermediateSize], [32, 14336])
  assert.deepEqual([specs['llama-70b'].numLayers, specs['llama-70b'].hiddenSize, specs['llama-70b'].numHeads], [80, 8192, 64])
  assert.equal(parseModelConfig(JSON.stringify(synthConfig({ shape: 'llama-70b', layers: 2 }))).numLayers, 2)
  assert.throws(() => synthConfig({ shape: 'gpt-5' as 'tiny' }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => synthConfig({ shape: 'tiny', layers: 0 }), { code: 'ERR_INVALID_INPUT' })
})
