import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ContextFullError, Stage, StageInputError, StageWorker, KvCacheMismatchError } from '../../src/inference/index.ts'
import { loadManifest, type ModelManifest } from '../../src/model/index.ts'
import { MeshModel, type MeshHop } from '../../src/split/index.ts'
import { LAYERS, promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'

let world: SplitWorld
let manifest: ModelManifest

before(async () => {
  world = await splitWorld(SPANS)
  manifest = await loadManifest(world.dataDir, world.model)
})

after(async () => {
  await world?.close()
})

const chain = (): MeshHop[] => SPANS.map((span, i) => ({ ...span, peers: [world.peer(i + 1)] }))

test('a StageWorker gives bit-identical hidden states and logits to a Stage in this thread, with its caches in the worker', async () => {
  const options = { threads: 1, spinning: false as const, maxContext: 64 }
  const spans = [{ start: 0, end: 1, embed: true, lmHead: false }, { start: LAYERS - 1, end: LAYERS, embed: false, lmHead: true }]
  for (const span of spans) {
    const stage = await Stage.open(world.dataDir, manifest, span, options)
    const worker = await StageWorker.open(world.dataDir, manifest, span, options)
    try {
      assert.equal(worker.maxContext, stage.maxContext)
      const local = stage.newCache()
      const remote = worker.newCache()
      const width = manifest.spec.hiddenSize
      // the prompt in one step, then decode steps of one row
      const steps = [promptIds(9, 3), [17], [42], [99]]
      for (const tokens of steps) {
        const input = span.embed ? { tokens } : { hidden: Float32Array.from({ length: tokens.length * width }, (_, i) => Math.sin(i + tokens[0]) * 2) }
        const expected = await stage.run({ ...input, allLogits: true }, local)
        const got = await worker.run({ ...input, allLogits: true }, remote)
        assert.equal(remote.length, local.length)
        if (span.lmHead) assert.deepEqual(got.logits, expected.logits)
        else assert.deepEqual(got.hidden, expected.hidden)
      }
      // a moved input is emptied on this side and still computed right
      if (!span.embed) {
        const hidden = Float32Array.from({ length: width }, (_, i) => Math.cos(i))
        const expected = await stage.run({ hidden: hidden.slice() }, local)
        const got = await worker.run({ hidden }, remote, { transferInput: true })
        assert.equal(hidden.length, 0, 'the buffer moved to the worker')
        assert.deepEqual(got.logits, expected.logits)
      }
      remote.release()
      await assert.rejects(worker.run(span.embed ? { tokens: [5] } : { hidden: new Float32Array(width) }, remote), KvCacheMismatchError)
    } finally {
      await stage.close()
      await worker.close()
    }
  }
})

test('errors in the worker come back as the same typed errors; a closed worker refuses runs', async () => {
  const worker = await StageWorker.open(world.dataDir, manifest, { start: 0, end: 1, embed: true, lmHead: false }, { threads: 1, maxContext: 8 })
  try {
    await assert.rejects(worker.run({ tokens: [manifest.spec.vocabSize + 5] }, worker.newCache()), (err: Error) => err instanceof StageInputError && /outside the vocabulary/.test(err.message))
    await assert.rejects(worker.run({ tokens: promptIds(9) }, worker.newCache()), (err: Error) => err instanceof ContextFullError && err.message === 'the context would reach 9 positions; the limit is 8')
    // the worker goes on after an error
    const out = await worker.run({ tokens: promptIds(4) }, worker.newCache())
    assert.equal(out.hidden?.length, 4 * manifest.spec.hiddenSize)
  } finally {
    await worker.close()
  }
  await assert.rejects(worker.run({ tokens: [5] }, worker.newCache()), /closed/)
})

test('a MeshModel with its head and tail on worker threads gives the in-thread tokens and logits bit for bit', async () => {
  const open = async (offload: boolean): Promise<MeshModel> => await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(), quantization: 'none', threads: 1, offload })
  const inThread = await open(false)
  const offloaded = await open(true)
  try {
    assert.equal(inThread.offload, false)
    assert.equal(offloaded.offload, true)
    const request = { promptIds: promptIds(12, 5), maxTokens: 16, stopTokens: [] }
    const expectedLogits: Float32Array[] = []
    const expected = await inThread.generate({ ...request, onLogits: (p, row) => { expectedLogits[p] = row.slice() } })
    const logits: Float32Array[] = []
    const got = await offloaded.generate({ ...request, onLogits: (p, row) => { logits[p] = row.slice() } })
    assert.deepEqual(got.tokens, expected.tokens)
    assert.equal(logits.length, expectedLogits.length)
    for (let i = 0; i < logits.length; i++) assert.deepEqual(logits[i], expectedLogits[i], `logits at ${i}`)
  } finally {
    await inThread.close()
    await offloaded.close()
  }
})

test('concurrent generations on one offloaded MeshModel give the same outputs as run one after another', async () => {
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(), threads: 1 })
  try {
    assert.equal(mesh.offload, true, 'offload is the default')
    const requests = [1, 2, 3, 4].map((seed) => ({ promptIds: promptIds(6 + seed, seed), maxTokens: 12, stopTokens: [] }))
    const sequential: number[][] = []
    for (const request of requests) sequential.push((await mesh.generate(request)).tokens)
    const concurrent = await Promise.all(requests.map(async (request) => (await mesh.generate(request)).tokens))
    assert.deepEqual(concurrent, sequential)
  } finally {
    await mesh.close()
  }
})
