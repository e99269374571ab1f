import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { importModel, openCheckpoint, parseModelConfig, ReferenceModel } from '../../src/model/index.ts'
import { argmax, LocalModel } from '../../src/inference/index.ts'
import { maxAbsDiff, STORIES_DIR, STORIES_SKIP, tempDir } from '../model/fixtures.ts'

const RUN_LENGTH = 64

/** Greedy run from BOS: returns the tokens fed (64) and the logits at each of them. */
async function greedyRun (model: LocalModel): Promise<{ tokens: number[], logits: Float32Array[] }> {
  const logits: Float32Array[] = []
  const result = await model.generate({ promptIds: [1], maxTokens: RUN_LENGTH, stopTokens: [], onLogits: (_, l) => logits.push(l.slice()) })
  // generate feeds every token but the last it samples: 1 prompt + 63 generated = 64 positions.
  return { tokens: [1, ...result.tokens.slice(0, RUN_LENGTH - 1)], logits }
}

test('stories260K: logits within 1e-4 of the float64 reference over a 64-token greedy run, split and unsplit; int8/int4 agreement', { skip: STORIES_SKIP }, async (t) => {
  const dir = await tempDir()
  const opened: LocalModel[] = []
  try {
    const data = join(dir.path, 'data')
    await importModel(data, { source: STORIES_DIR, name: 'stories' })
    const spec = parseModelConfig(await readFile(join(STORIES_DIR, 'config.json'), 'utf8'))
    assert.equal(spec.numHeads, 8)
    assert.equal(spec.numKvHeads, 4)
    const checkpoint = await openCheckpoint(STORIES_DIR)
    const reference = await ReferenceModel.load(spec, checkpoint)
    await checkpoint.close()

    const unsplit = await LocalModel.open({ dataDir: data, name: 'stories', threads: 1 })
    opened.push(unsplit)
    const base = await greedyRun(unsplit)
    assert.equal(base.logits.length, RUN_LENGTH)
    const refLogits = reference.forward(base.tokens)
    let refDiff = 0
    for (let i = 0; i < RUN_LENGTH; i++) {
      refDiff = Math.max(refDiff, maxAbsDiff(base.logits[i], refLogits[i]))
      if (i + 1 < RUN_LENGTH) assert.equal(argmax(Float32Array.from(refLogits[i])), base.tokens[i + 1], `greedy token ${i + 1} matches the reference`)
    }
    t.diagnostic(`unsplit max abs diff vs float64 reference: ${refDiff.toExponential(2)}`)
    assert.ok(refDiff <= 1e-4, `unsplit: ${refDiff}`)

    for (const splits of [[1], [2, 4], [1, 2, 3, 4]]) {
      const split = await LocalModel.open({ dataDir: data, name: 'stories', splits, threads: 1 })
      opened.push(split)
      const run = await greedyRun(split)
      assert.deepEqual(run.tokens, base.tokens)
      let diff = 0
      for (let i = 0; i < RUN_LENGTH; i++) diff = Math.max(diff, maxAbsDiff(run.logits[i], refLogits[i]))
      t.diagnostic(`split ${splits.join(',')}: max abs diff vs reference ${diff.toExponential(2)}`)
      assert.ok(diff <= 1e-4, `split ${splits.join(',')}: ${diff}`)
    }

    // Quantized: top-1 agreement with f32 at the same 64 positions (teacher-forced on the f32 run).
    for (const quant of ['int8', 'int4'] as const) {
      await importModel(data, { source: STORIES_DIR, name: quant, quant })
      for (const splits of [[], [2]]) {
        const model = await LocalModel.open({ dataDir: data, name: quant, splits, threads: 1 })
        opened.push(model)
        const logits = await model.newSession().forward(base.tokens, { allLogits: true })
        let agree = 0
        for (let i = 0; i < RUN_LENGTH; i++) if (argmax(logits.subarray(i * spec.vocabSize, (i + 1) * spec.vocabSize)) === argmax(base.logits[i])) agree++
        t.diagnostic(`${quant}${splits.length > 0 ? ' split' : ''}: top-1 agreement with f32 ${agree}/${RUN_LENGTH} = ${(100 * agree / RUN_LENGTH).toFixed(1)}%`)
        // The 98% target is not met on this 260K-parameter model (see docs/inference.md); these
        // floors catch a broken quantizer (random top-1 agreement would be ~0.2%).
        assert.ok(agree / RUN_LENGTH >= (quant === 'int8' ? 0.85 : 0.3), `${quant} agreement ${agree}/${RUN_LENGTH}`)
      }
    }
  } finally {
    for (const model of opened) await model.close()
    await dir.cleanup()
  }
})
