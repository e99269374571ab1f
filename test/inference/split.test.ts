import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { importModel, openCheckpoint, parseModelConfig, ReferenceModel } from '../../src/model/index.ts'
import { LocalModel } from '../../src/inference/index.ts'
import { maxAbsDiff, tempDir, tinyCheckpoint } from '../model/fixtures.ts'

const PROMPT = [1, 17, 99, 42, 250, 3, 64, 128]
const DECODE = [5, 77, 200]

/** Logits of the prompt (all positions) and then of each decode token, one pass per token. */
async function run (model: LocalModel): Promise<Float32Array[]> {
  const session = model.newSession()
  const vocab = model.manifest.spec.vocabSize
  const out: Float32Array[] = []
  const prefill = await session.forward(PROMPT, { allLogits: true })
  for (let i = 0; i < PROMPT.length; i++) out.push(prefill.slice(i * vocab, (i + 1) * vocab))
  for (const token of DECODE) out.push((await session.forward([token])).slice())
  return out
}

/** Every way to cut 4 layers with at least one layer in the head and one in the tail. */
const SPLITS = [[1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3]]

for (const variant of [
  { label: 'Llama, untied, GQA 8/4', options: {} },
  { label: 'Qwen2 (q/k/v bias), tied', options: { family: 'qwen2' as const, tieWordEmbeddings: true } },
  { label: 'Llama attention_bias (q/k/v/o), head_dim 16 != hidden/heads', options: { config: { attention_bias: true, head_dim: 16 } } },
  { label: 'Mistral with a sliding window', options: { family: 'mistral' as const, config: { sliding_window: 32 } } },
  { label: 'Llama 3 rope scaling, MHA', options: { config: { num_key_value_heads: 8, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } } } }
]) {
  test(`${variant.label}: every split equals the unsplit model (f32, <= 1e-5) and the float64 reference (<= 1e-4)`, async () => {
    const dir = await tempDir()
    const opened: LocalModel[] = []
    try {
      const source = await tinyCheckpoint(join(dir.path, 'ckpt'), variant.options)
      const data = join(dir.path, 'data')
      await importModel(data, { source, name: 'm' })
      const whole = await LocalModel.open({ dataDir: data, name: 'm', threads: 1 })
      opened.push(whole)
      const expected = await run(whole)

      const spec = parseModelConfig(await readFile(join(source, 'config.json'), 'utf8'))
      const checkpoint = await openCheckpoint(source)
      const reference = await ReferenceModel.load(spec, checkpoint)
      await checkpoint.close()
      const refLogits = reference.forward([...PROMPT, ...DECODE])
      let refDiff = 0
      for (let i = 0; i < expected.length; i++) refDiff = Math.max(refDiff, maxAbsDiff(expected[i], refLogits[i]))
      assert.ok(refDiff <= 1e-4, `unsplit vs float64 reference: ${refDiff}`)

      for (const splits of SPLITS) {
        const split = await LocalModel.open({ dataDir: data, name: 'm', splits, threads: 1 })
        opened.push(split)
        assert.equal(split.stages.length, splits.length + 1)
        const got = await run(split)
        let diff = 0
        for (let i = 0; i < expected.length; i++) diff = Math.max(diff, maxAbsDiff(got[i], expected[i]))
        assert.ok(diff <= 1e-5, `split ${splits.join(',')}: max abs diff ${diff}`)
      }
    } finally {
      for (const model of opened) await model.close()
      await dir.cleanup()
    }
  })
}

test('f16 weights stay close to f32', async () => {
  const dir = await tempDir()
  try {
    const source = await tinyCheckpoint(join(dir.path, 'ckpt'))
    const data = join(dir.path, 'data')
    await importModel(data, { source, name: 'f32' })
    await importModel(data, { source, name: 'f16', dtype: 'f16' })
    const a = await LocalModel.open({ dataDir: data, name: 'f32', threads: 1 })
    const b = await LocalModel.open({ dataDir: data, name: 'f16', splits: [2], threads: 1 })
    assert.equal(b.manifest.tensors['layers.0.q'].dtype, 'f16')
    const la = await run(a)
    const lb = await run(b)
    let diff = 0
    for (let i = 0; i < la.length; i++) diff = Math.max(diff, maxAbsDiff(la[i], lb[i]))
    assert.ok(diff < 5e-3, `f16 vs f32: ${diff}`)
    await a.close()
    await b.close()
  } finally {
    await dir.cleanup()
  }
})

test('quantized (int8, int4) splits equal their unsplit model; Qwen2 biases and tied LM head', async () => {
  const dir = await tempDir()
  const opened: LocalModel[] = []
  try {
    const source = await tinyCheckpoint(join(dir.path, 'ckpt'), { family: 'qwen2', tieWordEmbeddings: true })
    const data = join(dir.path, 'data')
    for (const quant of ['int8', 'int4'] as const) {
      await importModel(data, { source, name: quant, quant, dtype: 'f16' })
      const whole = await LocalModel.open({ dataDir: data, name: quant, threads: 1 })
      opened.push(whole)
      assert.equal(whole.manifest.tensors['layers.0.q'].quant?.bits, quant === 'int8' ? 8 : 4)
      assert.equal(whole.manifest.tensors.lm_head.quant?.bits, 8)
      assert.equal(whole.manifest.tensors.embed.dtype, 'f16')
      const expected = await run(whole)
      for (const splits of [[1], [1, 2, 3]]) {
        const split = await LocalModel.open({ dataDir: data, name: quant, splits, threads: 1 })
        opened.push(split)
        const got = await run(split)
        let diff = 0
        for (let i = 0; i < expected.length; i++) diff = Math.max(diff, maxAbsDiff(got[i], expected[i]))
        assert.ok(diff <= 1e-5, `${quant} split ${splits.join(',')}: ${diff}`)
      }
    }
  } finally {
    for (const model of opened) await model.close()
    await dir.cleanup()
  }
})
