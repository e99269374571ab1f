import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { LocalModel } from '../../src/inference/index.ts'
import { waitUntil } from '../../src/simulation/index.ts'
import { MeshModel, type MeshGenerateResult, type MeshHop } from '../../src/split/index.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'

// Nodes 1-3 serve the three middle spans, node 4 is a second server for layers 2-3 (the spare).
let world: SplitWorld
let local: LocalModel
const PRIMARY = 2
const SPARE = 4

before(async () => {
  world = await splitWorld([...SPANS, SPANS[1]])
  local = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1 })
})

after(async () => {
  await local?.close()
  await world?.close()
})

function chain (): MeshHop[] {
  return [
    { ...SPANS[0], peers: [world.peer(1)] },
    { ...SPANS[1], peers: [world.peer(PRIMARY), world.peer(SPARE)] },
    { ...SPANS[2], peers: [world.peer(3)] }
  ]
}

const spare = (): { opened: number, sessions: number } => world.servers[SPARE - 1].stats()

/**
 * One generation whose middle primary loses every connection at token 8 (its server stays up, so
 * the next run can use it again). Returns the result, the logits, and the spare's opened count
 * at the moment of the kill.
 */
async function interrupted (standby: boolean): Promise<{ result: MeshGenerateResult, logits: Float32Array[], spareOpenedAtKill: number, spareOpenedBefore: number }> {
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(), quantization: 'none', threads: 1, standby })
  const logits: Float32Array[] = []
  const spareOpenedBefore = spare().opened
  let spareOpenedAtKill = -1
  try {
    const result = await mesh.generate({
      promptIds: promptIds(14, 4),
      maxTokens: 24,
      stopTokens: [],
      onLogits: (p, row) => { logits[p] = row.slice() },
      onToken: (event) => {
        if (event.index !== 8) return
        spareOpenedAtKill = spare().opened
        for (const connection of world.swarm.nodes[PRIMARY].mesh.libp2p.getConnections()) connection.abort(new Error('killed'))
      }
    })
    return { result, logits, spareOpenedAtKill, spareOpenedBefore }
  } finally {
    await mesh.close()
  }
}

test('a failover replays into the standby opened beforehand: same tokens and bit-identical logits as a failover that dials', async () => {
  const expected = await local.generate({ promptIds: promptIds(14, 4), maxTokens: 24, stopTokens: [] })

  const fast = await interrupted(true)
  assert.deepEqual(fast.result.tokens, expected.tokens)
  assert.equal(fast.result.failovers.length, 1)
  const [failover] = fast.result.failovers
  assert.equal(failover.hop, 1)
  assert.equal(failover.from, world.peer(PRIMARY).toString())
  assert.equal(failover.to, world.peer(SPARE).toString())
  assert.equal(failover.standby, true, 'the replacement was the standby')
  assert.equal(failover.replayed, 14 + 8)
  // the spare's session existed before the failure, and no other was opened on it afterwards
  assert.equal(fast.spareOpenedAtKill, fast.spareOpenedBefore + 1, 'the standby was open on the spare before the kill')
  assert.equal(spare().opened, fast.spareOpenedBefore + 1, 'nothing opened on the spare at failure time')
  // the standby and the promoted session are closed with the generation
  await waitUntil(() => spare().sessions === 0, { timeoutMs: 10_000 })

  const slow = await interrupted(false)
  assert.equal(slow.spareOpenedAtKill, slow.spareOpenedBefore, 'no standby without the option')
  assert.deepEqual(slow.result.failovers.map((f) => [f.to, f.standby, f.replayed]), [[world.peer(SPARE).toString(), false, 14 + 8]])
  assert.deepEqual(slow.result.tokens, fast.result.tokens)
  assert.equal(slow.logits.length, fast.logits.length)
  for (let i = 0; i < fast.logits.length; i++) assert.deepEqual(fast.logits[i], slow.logits[i], `logits at position ${i} bit-identical`)
  await waitUntil(() => spare().sessions === 0, { timeoutMs: 10_000 })
})

test('without a failure the standby is closed at the end and the output is the plain run\'s', async () => {
  const request = { promptIds: promptIds(9, 7), maxTokens: 10, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(), quantization: 'none', threads: 1, standby: true, standbyKeepAliveMs: 20 })
  try {
    const before = spare().opened
    // a short keep-alive: the standby is pinged many times during the run, then closed
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.failovers.length, 0)
    assert.equal(spare().opened, before + 1, 'one standby on the spare')
    await waitUntil(() => spare().sessions === 0, { timeoutMs: 10_000 })
  } finally {
    await mesh.close()
  }
})

test('a primary drained onto the standby\'s server: the hand-off resumes there (own session ids, no clash), nothing replayed', async () => {
  const request = { promptIds: promptIds(10, 3), maxTokens: 160, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(), quantization: 'none', threads: 1, standby: true })
  const progress = new EventTarget()
  let produced = 0
  try {
    const running = mesh.generate({ ...request, onToken: () => { produced++; progress.dispatchEvent(new Event('token')) } })
    running.catch(() => {})
    // the primary holds the session, the spare the standby
    await waitUntil(() => produced >= 4 && spare().sessions === 1 && world.servers[PRIMARY - 1].stats().sessions === 1, { events: [{ target: progress, type: 'token' }], timeoutMs: 30_000, what: 'a few steps in, the standby open' })
    const drained = await world.servers[PRIMARY - 1].drain(world.peer(SPARE), { identity: world.swarm.nodes[PRIMARY].identity })
    assert.equal(drained.moved.length, 1, JSON.stringify(drained.failed))
    const result = await running
    assert.deepEqual(result.tokens, expected.tokens)
    assert.deepEqual(result.failovers, [], 'resumed, not replayed')
    assert.deepEqual(result.handoffs?.map((h) => [h.from, h.to]), [[world.peer(PRIMARY).toString(), world.peer(SPARE).toString()]])
    await waitUntil(() => spare().sessions === 0, { timeoutMs: 10_000 })
  } finally {
    await mesh.close()
  }
})
