import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { LocalModel } from '../../src/inference/index.ts'
import { MessageChannel } from '../../src/mesh/index.ts'
import { createLayerServer, INFER_PROTOCOL, MeshModel, type LayerServer, type MeshHop } from '../../src/split/index.ts'
import { maxAbsDiff } from '../model/fixtures.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'

// Nodes 1-3 serve the three middle spans, node 4 is a second server for layers 2-3, node 5 takes
// inference streams and never answers (a stalled server).
let world: SplitWorld
let local: LocalModel
const STALLED = 5

before(async () => {
  world = await splitWorld([...SPANS, SPANS[1]], { extraNodes: 1 })
  local = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1 })
  const stalled = world.swarm.nodes[STALLED].mesh.libp2p
  await stalled.handle(INFER_PROTOCOL, async (stream, connection) => {
    const channel = new MessageChannel(INFER_PROTOCOL, stream, connection.remotePeer, 1 << 20)
    // reads the open and whatever follows, answers nothing, until the client gives up on it
    for (;;) await channel.receive({ timeoutMs: 60_000 })
  })
})

after(async () => {
  await local?.close()
  await world?.close()
})

function chain (middle: number[]): MeshHop[] {
  return [
    { ...SPANS[0], peers: [world.peer(1)] },
    { ...SPANS[1], peers: middle.map((node) => world.peer(node)) },
    { ...SPANS[2], peers: [world.peer(3)] }
  ]
}

test('a server killed mid-generation is replaced; the replacement is replayed the span inputs and the output is unchanged', async (t) => {
  const prompt = promptIds(14, 4)
  const request = { promptIds: prompt, maxTokens: 24, stopTokens: [] }
  const expectedLogits: Float32Array[] = []
  const expected = await local.generate({ ...request, onLogits: (p, row) => { expectedLogits[p] = row.slice() } })
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([2, 4]), quantization: 'none', threads: 1 })
  const victim = world.swarm.nodes[2]
  const logits: Float32Array[] = []
  let stopped: Promise<void> | undefined
  try {
    const result = await mesh.generate({
      ...request,
      onLogits: (p, row) => { logits[p] = row.slice() },
      onToken: (event) => {
        if (event.index !== 8) return
        // kill the middle server: its server stops and every connection it has is reset at once
        stopped = world.servers[1].stop()
        for (const connection of victim.mesh.libp2p.getConnections()) connection.abort(new Error('killed'))
      }
    })
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.failovers.length, 1)
    const [failover] = result.failovers
    assert.equal(failover.hop, 1)
    assert.equal(failover.from, world.peer(2).toString())
    assert.equal(failover.to, world.peer(4).toString())
    assert.equal(failover.replayed, prompt.length + 8, 'the prompt and the 8 tokens fed before the kill were replayed')
    let diff = 0
    for (let i = 0; i < logits.length; i++) diff = Math.max(diff, maxAbsDiff(logits[i], expectedLogits[i]))
    t.diagnostic(`max abs logit difference to the uninterrupted run: ${diff.toExponential(2)}`)
    assert.ok(diff < 1e-4, `logits after the failover within 1e-4 of the uninterrupted run (${diff})`)
    // the replacement holds no session any more, the other servers neither
    assert.equal(world.servers[3].stats().opened, 1)
  } finally {
    await stopped
    await mesh.close()
  }
})

test('a stalled server is detected by its reply deadline and its span re-routed', async () => {
  const request = { promptIds: promptIds(10, 9), maxTokens: 8, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([STALLED, 4]), quantization: 'none', threads: 1, timeouts: { replyMs: 1500 } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.failovers.length, 1)
    assert.equal(result.failovers[0].code, 'ERR_REPLY_TIMEOUT')
    assert.equal(result.failovers[0].to, world.peer(4).toString())
    // the stalled server is banned: the next generation goes straight to the working one
    const again = await mesh.generate(request)
    assert.deepEqual(again.tokens, expected.tokens)
    assert.equal(again.failovers.length, 0)
  } finally {
    await mesh.close()
  }
})

test('with no server left for a span, generation fails with ERR_NO_ROUTE', async () => {
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: [{ ...SPANS[0], peers: [world.peer(3)] }, { ...SPANS[1], peers: [world.peer(4)] }, { ...SPANS[2], peers: [world.peer(3)] }], quantization: 'none', threads: 1 })
  try {
    // node 3 serves layers 3-4, not 1-2: it answers ERR_WRONG_SPAN, and there is no other server
    await assert.rejects(mesh.generate({ promptIds: promptIds(5), maxTokens: 2 }), (err: { code?: string, cause?: { code?: string } }) => err.code === 'ERR_NO_ROUTE' && err.cause?.code === 'ERR_WRONG_SPAN')
  } finally {
    await mesh.close()
  }
})

test('with f16 activations a failover continues exactly like an uninterrupted f16 run (the replay re-sends the same rows)', async () => {
  // node 2's server was stopped above: start a new one there, as the replacement for node 4
  const restarted: LayerServer = createLayerServer({ libp2p: world.swarm.nodes[2].mesh.libp2p, dataDir: world.dataDir, model: world.model, layers: SPANS[1], threads: 1 })
  await restarted.start()
  const open = async (middle: number[]): Promise<MeshModel> => await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(middle), threads: 1 })
  const request = { promptIds: promptIds(11, 12), maxTokens: 20, stopTokens: [] }
  const steady = await open([4])
  const meshes = [steady]
  let stopped: Promise<void> | undefined
  try {
    const expected = await steady.generate(request)
    assert.equal(steady.quantization, 'f16')
    const victim = world.swarm.nodes[4]
    const interrupted = await open([4, 2])
    meshes.push(interrupted)
    const result = await interrupted.generate({
      ...request,
      onToken: (event) => {
        if (event.index !== 5) return
        stopped = world.servers[3].stop()
        for (const connection of victim.mesh.libp2p.getConnections()) connection.abort(new Error('killed'))
      }
    })
    assert.deepEqual(result.failovers.map((f) => [f.from, f.to, f.replayed]), [[world.peer(4).toString(), world.peer(2).toString(), 11 + 5]])
    assert.deepEqual(result.tokens, expected.tokens)
  } finally {
    await stopped
    for (const mesh of meshes) await mesh.close()
    await restarted.stop()
  }
})
