import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { importModel, spanWeightBytes, weightBytes } from '../../src/model/index.ts'
import { argmax, KvCache, LocalModel, Sampler, Stage } from '../../src/inference/index.ts'
import { maxAbsDiff, tempDir, tinyCheckpoint, type TempDir } from '../model/fixtures.ts'

let dir: TempDir
let data: string
let model: LocalModel

before(async () => {
  dir = await tempDir()
  const source = await tinyCheckpoint(join(dir.path, 'ckpt'))
  data = join(dir.path, 'data')
  await importModel(data, { source, name: 'tiny' })
  model = await LocalModel.open({ dataDir: data, name: 'tiny', splits: [1, 3], threads: 1, maxContext: 64 })
})

after(async () => {
  await model?.close()
  await dir?.cleanup()
})

test('prefill in one pass equals token-by-token decode', async () => {
  const prompt = [1, 9, 33, 70, 5, 140]
  const once = await model.newSession().forward(prompt, { allLogits: true })
  const stepwise = model.newSession()
  const vocab = model.manifest.spec.vocabSize
  for (let i = 0; i < prompt.length; i++) {
    const logits = await stepwise.forward([prompt[i]])
    assert.ok(maxAbsDiff(logits, once.subarray(i * vocab, (i + 1) * vocab)) <= 1e-5, `position ${i}`)
  }
  assert.equal(stepwise.caches[1].length, prompt.length)
})

test('chunked prefill equals one pass', async () => {
  const prompt = Array.from({ length: 11 }, (_, i) => 3 + i * 17)
  const once = await model.newSession().forward(prompt, { allLogits: true })
  const chunked = await LocalModel.open({ dataDir: data, name: 'tiny', splits: [2], threads: 1, maxContext: 64, prefillChunk: 4 })
  try {
    const session = chunked.newSession()
    const all = await session.forward(prompt, { allLogits: true })
    assert.equal(all.length, once.length)
    assert.ok(maxAbsDiff(all, once) <= 1e-5)
    const vocab = model.manifest.spec.vocabSize
    const last = await chunked.newSession().forward(prompt)
    assert.ok(maxAbsDiff(last, once.subarray(once.length - vocab)) <= 1e-5)
    assert.equal(session.caches[0].length, 11)
  } finally {
    await chunked.close()
  }
})

test('a stage cache exported into a fresh session continues identically', async () => {
  const prompt = [1, 4, 8, 15, 16, 23, 42]
  const source = model.newSession()
  await source.forward(prompt)
  const snapshots = source.caches.map((c) => c.export())
  assert.deepEqual(snapshots.map((s) => [s.layerStart, s.layerEnd, s.length]), [[0, 1, 7], [1, 3, 7], [3, 4, 7]])
  assert.equal(snapshots[1].keys[0].length, 4 * 7 * 8)
  const target = model.newSession()
  target.caches.forEach((cache, i) => cache.import(snapshots[i]))
  const a = await source.forward([99])
  const b = await target.forward([99])
  assert.equal(maxAbsDiff(a, b), 0)
  // A snapshot of other layers is refused.
  assert.throws(() => target.caches[0].import(snapshots[1]), { code: 'ERR_KV_CACHE_MISMATCH' })

  // Whole-session attach: generation continues exactly as on the source; bad attaches change nothing.
  const continued = await model.generate({ promptIds: [7], maxTokens: 5, stopTokens: [] }, source)
  const attached = model.newSession()
  attached.importCaches(snapshots, prompt)
  assert.throws(() => attached.importCaches(snapshots, [1, 2]), { code: 'ERR_KV_CACHE_MISMATCH' })
  assert.throws(() => attached.importCaches([snapshots[1], snapshots[0], snapshots[2]]), { code: 'ERR_KV_CACHE_MISMATCH' })
  assert.throws(() => attached.importCaches(snapshots.slice(1)), { code: 'ERR_KV_CACHE_MISMATCH' })
  assert.equal(attached.length, prompt.length)
  // the source fed [99] after the snapshot; feed it here too, then generate the same way
  await attached.forward([99])
  const resumed = await model.generate({ promptIds: [7], maxTokens: 5, stopTokens: [] }, attached)
  assert.deepEqual(resumed.tokens, continued.tokens)
  const anonymous = model.newSession()
  anonymous.importCaches(snapshots)
  assert.equal(anonymous.length, prompt.length)
  assert.deepEqual(anonymous.tokens, [])
})

test('truncating caches rolls a session back', async () => {
  const session = model.newSession()
  const first = await session.forward([1, 2, 3])
  await session.forward([50, 60])
  for (const cache of session.caches) cache.truncate(2)
  session.tokens.length = 2
  const again = await session.forward([3])
  assert.ok(maxAbsDiff(again, first) <= 1e-5)
})

test('a middle stage takes hidden states and positions; wrong positions and full contexts are refused', async () => {
  const manifest = model.manifest
  const head = model.stages[0]
  const middle = model.stages[1]
  const headCache = head.newCache()
  const midCache = middle.newCache()
  const { hidden } = await head.run({ tokens: [1, 2, 3] }, headCache)
  assert.equal(hidden?.length, 3 * manifest.spec.hiddenSize)
  await assert.rejects(middle.run({ hidden: hidden as Float32Array, positions: [1, 2, 3] }, midCache), { code: 'ERR_STAGE_INPUT' })
  const out = await middle.run({ hidden: hidden as Float32Array, positions: [0, 1, 2] }, midCache)
  assert.equal(out.hidden?.length, 3 * manifest.spec.hiddenSize)
  assert.equal(midCache.length, 3)
  await assert.rejects(middle.run({ tokens: [1] }, midCache), { code: 'ERR_STAGE_INPUT' })
  await assert.rejects(middle.run({ hidden: new Float32Array(5) }, midCache), { code: 'ERR_STAGE_INPUT' })
  await assert.rejects(head.run({ tokens: [manifest.spec.vocabSize] }, headCache), { code: 'ERR_STAGE_INPUT' })
  await assert.rejects(middle.run({ hidden: new Float32Array(manifest.spec.hiddenSize) }, new KvCache({ layerStart: 0, layerEnd: 1, numKvHeads: 4, headDim: 8 })), { code: 'ERR_STAGE_INPUT' })
  await assert.rejects(head.run({ tokens: new Array(62).fill(1) }, headCache), { code: 'ERR_CONTEXT_FULL' })
  const small = await Stage.open(data, manifest, { start: 0, end: 4, embed: true, lmHead: true }, { maxContext: 4, threads: 1 })
  await assert.rejects(small.run({ tokens: [1, 2, 3, 4, 5] }, small.newCache()), { code: 'ERR_CONTEXT_FULL' })
  await small.close()
})

test('generate: greedy equals argmax of the logits it streams; stop tokens; streaming; abort', async () => {
  const positions: number[] = []
  const logits: Float32Array[] = []
  const events: number[] = []
  const result = await model.generate({
    promptIds: [1, 10, 20], maxTokens: 8, stopTokens: [],
    onLogits: (p, l) => { positions.push(p); logits.push(l.slice()) },
    onToken: (e) => events.push(e.id)
  })
  assert.equal(result.tokens.length, 8)
  assert.equal(result.finishReason, 'length')
  assert.deepEqual(events, result.tokens)
  assert.deepEqual(positions, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  for (let i = 0; i < result.tokens.length; i++) assert.equal(result.tokens[i], argmax(logits[i + 2]))
  assert.equal(result.text, result.tokens.map((t) => `t${t}`).join(' '))

  const stopped = await model.generate({ promptIds: [1, 10, 20], maxTokens: 8, stopTokens: [result.tokens[3]] })
  assert.deepEqual(stopped.tokens, result.tokens.slice(0, result.tokens.indexOf(result.tokens[3]) + 1))
  assert.equal(stopped.finishReason, 'stop')

  const fromText = await model.generate({ prompt: 't10 t20', maxTokens: 3, stopTokens: [] })
  assert.deepEqual(fromText.promptTokens, [10, 20])

  const controller = new AbortController()
  await assert.rejects(model.generate({ promptIds: [1], maxTokens: 50, stopTokens: [], onToken: (e) => { if (e.index === 2) controller.abort() }, signal: controller.signal }), { name: 'AbortError' })
  await assert.rejects(model.generate({ promptIds: [1, 999], maxTokens: 1 }), { code: 'ERR_INVALID_INPUT' })
  const chat = await model.generate({ messages: [{ role: 'user', content: 't30 t31' }], maxTokens: 2, stopTokens: [] })
  assert.deepEqual(chat.promptTokens, [1, 30, 31])
})

test('span weight bytes add up to the stored model', () => {
  const m = model.manifest
  const files = Object.entries(m.files).filter(([f]) => f.endsWith('.bin')).reduce((a, [, f]) => a + f.bytes, 0)
  const spans = model.stages.map((s) => spanWeightBytes(m, s.span))
  assert.ok(spans.every((b) => b > 0))
  const all = spanWeightBytes(m, { start: 0, end: m.spec.numLayers, embed: true, lmHead: true })
  assert.equal(spans.reduce((a, b) => a + b, 0), all)
  assert.ok(all <= files && all > files * 0.95, 'alignment padding is the only difference')
  assert.ok(weightBytes(m) < all, 'the embedding table is not read per token')
})

test('sampler: greedy, seeded sampling, top-k, top-p, repetition penalty', () => {
  const logits = Float32Array.from([0.1, 2.0, 1.9, -1, 0.5])
  assert.equal(new Sampler().sample(logits), 1)
  assert.equal(new Sampler({ repetitionPenalty: 1.2 }).sample(logits, [1]), 2)
  assert.equal(new Sampler({ temperature: 1, topK: 1, seed: 3 }).sample(logits), 1)
  assert.equal(new Sampler({ temperature: 1, topP: 0.01, seed: 3 }).sample(logits), 1)
  const draw = (seed: number) => { const s = new Sampler({ temperature: 1.5, seed }); return Array.from({ length: 50 }, () => s.sample(logits)) }
  assert.deepEqual(draw(42), draw(42))
  assert.notDeepEqual(draw(42), draw(43))
  const counts = new Map<number, number>()
  for (const t of draw(7)) counts.set(t, (counts.get(t) ?? 0) + 1)
  assert.ok(counts.size >= 3, 'temperature spreads the choice')
  const topTwo = new Sampler({ temperature: 5, topK: 2, seed: 1 })
  for (let i = 0; i < 50; i++) assert.ok([1, 2].includes(topTwo.sample(logits)))
  // Frequencies follow softmax(logits / T); top-p keeps the smallest set reaching p.
  const probs = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)])
  const freq = (sampler: Sampler) => { const c = [0, 0, 0]; for (let i = 0; i < 4000; i++) c[sampler.sample(probs)]++; return c.map((n) => n / 4000) }
  const plain = freq(new Sampler({ temperature: 1, seed: 9 }))
  for (const [i, p] of [0.5, 0.3, 0.2].entries()) assert.ok(Math.abs(plain[i] - p) < 0.03, `token ${i}: ${plain[i]}`)
  const nucleus = freq(new Sampler({ temperature: 1, topP: 0.6, seed: 9 }))
  assert.equal(nucleus[2], 0)
  assert.ok(Math.abs(nucleus[0] - 0.625) < 0.03, `renormalized over the kept tokens: ${nucleus[0]}`)
  assert.throws(() => new Sampler({ temperature: -1 }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => new Sampler({ topP: 0 }), { code: 'ERR_INVALID_INPUT' })
})
