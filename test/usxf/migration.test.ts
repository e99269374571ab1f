import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { PeerId } from '@libp2p/interface'
import { waitFor } from '../../src/util/index.ts'
import { compareContinuations, sessionPositions, type MigrationResult, type UsxfQuantization } from '../../src/usxf/index.ts'
import { collect, otherIdentity } from './helpers.ts'
import { generate, migrationWorld, promptIds, sessionDigest, type MigrationWorld } from './fixtures.ts'

// Node 0 and 1 hold 128 positions, node 2 only 50 (for context limits). Each node splits the model
// into different stages, so a migrated cache is re-mapped onto the target's own stage layout.
let world: MigrationWorld

before(async () => {
  world = await migrationWorld([128, 128, 50])
})

after(async () => {
  await world?.close()
})

const peer = (i: number): PeerId => world.swarm.nodes[i].mesh.peerId

/** What an uninterrupted run produces after `generated` tokens: the next `continuation` tokens. */
async function reference (prompt: number[], generated: number, continuation: number): Promise<number[]> {
  const { model } = world.nodes[0]
  const tokens = await generate(model, model.newSession(), prompt, generated + continuation)
  return tokens.slice(generated)
}

async function startSession (node: number, id: string, prompt: number[], generated: number, options: { shareTokenIds?: boolean } = {}): Promise<number> {
  const { model, service } = world.nodes[node]
  const session = model.newSession()
  const tokens = await generate(model, session, prompt, generated)
  const pending = tokens[tokens.length - 1]
  service.sessions.add(id, model, session, { pendingToken: pending, shareTokenIds: options.shareTokenIds ?? false })
  return pending
}

function assertMigrated (result: MigrationResult, positions: number): void {
  assert.equal(result.outcome, 'migrated')
  assert.equal(result.positions, positions)
  assert.ok(result.estimate.bandwidthBytesPerSecond > 0 && Number.isFinite(result.estimate.ratio), 'the warm-start estimate is reported')
  assert.ok(result.estimate.prefillTokensPerSecond > 0)
  assert.ok(result.streamBytes > 0)
}

for (const quantization of ['none', 'f16'] as UsxfQuantization[]) {
  test(`a session migrated with quantization ${quantization} continues exactly for 32 greedy tokens`, async () => {
    const prompt = promptIds(40, quantization === 'none' ? 1 : 2)
    const expected = await reference(prompt, 5, 32)
    const id = `exact-${quantization}`
    const pending = await startSession(0, id, prompt, 5)
    const result = await world.nodes[0].service.migrate(id, peer(1), { quantization, mode: 'always', fidelityTokens: 16 })
    assertMigrated(result, 44)
    assert.equal(result.quantization, quantization)
    assert.equal(result.fidelity?.verdict, 'exact')
    assert.equal(result.fidelity?.compared, 16)
    // the source released it; the target holds it, without token ids (they never left the source)
    assert.equal(world.nodes[0].service.sessions.has(id), false)
    const hosted = world.nodes[1].service.sessions.require(id)
    assert.deepEqual(hosted.session.tokens, [])
    assert.equal(hosted.pendingToken, null)
    assert.equal(hosted.session.caches.at(-1)?.length, 44)
    // the client, which knows its pending token, continues on the new host
    const continued = await generate(world.nodes[1].model, hosted.session, [pending], 32)
    assert.deepEqual(continued, expected)
    world.nodes[1].service.sessions.remove(id)
  })
}

test('int8-block migration commits and reports its agreement', async (t) => {
  const prompt = promptIds(40, 3)
  const expected = await reference(prompt, 5, 32)
  const pending = await startSession(0, 'lossy', prompt, 5)
  const result = await world.nodes[0].service.migrate('lossy', peer(1), { quantization: 'int8-block', mode: 'always', fidelityTokens: 16 })
  assertMigrated(result, 44)
  assert.ok(result.fidelity !== null && ['exact', 'lossy-divergence'].includes(result.fidelity.verdict))
  assert.ok(result.streamBytes < 44 * 1024 / 3, `int8 sends about a quarter of f32 (${result.streamBytes} bytes)`)
  const hosted = world.nodes[1].service.sessions.require('lossy')
  const continued = await generate(world.nodes[1].model, hosted.session, [pending], 32)
  let agree = 0
  while (agree < 32 && continued[agree] === expected[agree]) agree++
  t.diagnostic(`int8-block: fidelity ${result.fidelity?.verdict} (${result.fidelity?.matching}/${result.fidelity?.compared}); continuation agrees for ${agree}/32 tokens`)
  world.nodes[1].service.sessions.remove('lossy')
})

test('token ids and the pending token travel only when the session allows it', async () => {
  const prompt = promptIds(20, 4)
  const pending = await startSession(0, 'shared', prompt, 3, { shareTokenIds: true })
  const history = [...world.nodes[0].service.sessions.require('shared').session.tokens]
  const result = await world.nodes[0].service.migrate('shared', peer(1), { mode: 'always', fidelityTokens: 4 })
  assert.equal(result.fidelity?.verdict, 'exact')
  const hosted = world.nodes[1].service.sessions.require('shared')
  assert.deepEqual(hosted.session.tokens, history)
  assert.equal(hosted.pendingToken, pending)
  assert.equal(hosted.shareTokenIds, true)
  world.nodes[1].service.sessions.remove('shared')
})

test('the warm-start decision can decline, leaving the session where it was', async () => {
  await startSession(0, 'stay', promptIds(10, 5), 2)
  const before = sessionDigest(world.nodes[0].service.sessions.require('stay').session)
  const result = await world.nodes[0].service.migrate('stay', peer(1), { threshold: 1e-12 })
  assert.equal(result.outcome, 'declined')
  assert.equal(result.estimate.decision, 'reprefill')
  assert.ok(result.estimate.transferMs > 0 && result.estimate.reprefillMs > 0)
  const hosted = world.nodes[0].service.sessions.require('stay')
  assert.equal(hosted.state, 'live')
  assert.equal(sessionDigest(hosted.session), before)
  assert.equal(world.nodes[1].service.sessions.has('stay'), false)
  await waitFor(() => world.nodes[1].events.find((e) => e.sessionId === 'stay'), { what: 'the target noting the withdrawal' })
  assert.equal(world.nodes[1].events.find((e) => e.sessionId === 'stay')?.outcome, 'withdrawn')
  world.nodes[0].service.sessions.remove('stay')
})

test('fidelity records tell target context exhaustion from a defect', async () => {
  // 44 positions moved to a node with a 50-position context: room for 6 of 16 check tokens
  await startSession(0, 'tight', promptIds(40, 6), 5)
  const result = await world.nodes[0].service.migrate('tight', peer(2), { mode: 'always', fidelityTokens: 16 })
  assert.equal(result.outcome, 'migrated')
  assert.equal(result.fidelity?.verdict, 'context-exhausted')
  assert.equal(result.fidelity?.limitedBy, 'target')
  assert.equal(result.fidelity?.compared, 6)
  assert.equal(result.fidelity?.matching, 6)
  world.nodes[2].service.sessions.remove('tight')
  // the same comparison with a mismatch is a defect after an exact transfer, a divergence after a lossy one
  const source = { tokens: [1, 2, 3, 4], room: 10 }
  const target = { tokens: [1, 2, 9, 4], room: 10 }
  assert.equal(compareContinuations(4, source, target, 'none', false).verdict, 'defect')
  assert.equal(compareContinuations(4, source, target, 'int8-block', true).verdict, 'lossy-divergence')
  assert.equal(compareContinuations(4, source, { tokens: [1, 2], room: 2 }, 'none', false).verdict, 'context-exhausted')
})

test('a session longer than the target\'s context is refused, and both sides stay as they were', async () => {
  await startSession(0, 'long', promptIds(58, 7), 3)
  const hosted = world.nodes[0].service.sessions.require('long')
  const before = sessionDigest(hosted.session)
  const sizeBefore = world.nodes[2].service.sessions.size
  await assert.rejects(world.nodes[0].service.migrate('long', peer(2), { mode: 'always' }), { code: 'ERR_USXF_CONTEXT_EXCEEDED' })
  assert.equal(hosted.state, 'live')
  assert.equal(sessionDigest(hosted.session), before)
  assert.equal(world.nodes[2].service.sessions.size, sizeBefore)
  assert.equal(world.nodes[2].events.find((e) => e.sessionId === 'long')?.code, 'ERR_USXF_CONTEXT_EXCEEDED')
  world.nodes[0].service.sessions.remove('long')
})

test('drain hands three live sessions to another node without replay', async () => {
  const prompts = [promptIds(30, 8), promptIds(35, 9), promptIds(25, 10)]
  const pendings: number[] = []
  for (let i = 0; i < 3; i++) pendings.push(await startSession(0, `drain-${i}`, prompts[i], 4))
  const expected = await Promise.all(prompts.map(async (p) => await reference(p, 4, 12)))
  const result = await world.nodes[0].service.drain(peer(1), { fidelityTokens: 4 })
  assert.deepEqual(result.failed, [])
  assert.deepEqual(result.migrated.map((r) => r.sessionId), ['drain-0', 'drain-1', 'drain-2'])
  assert.ok(result.migrated.every((r) => r.outcome === 'migrated' && r.estimate.forced))
  assert.equal(world.nodes[0].service.sessions.size, 0)
  assert.equal(world.nodes[0].service.sessions.open, false, 'a draining node takes no new sessions')
  for (let i = 0; i < 3; i++) {
    const hosted = world.nodes[1].service.sessions.require(`drain-${i}`)
    // no replay: the target never had the tokens, only the caches
    assert.deepEqual(hosted.session.tokens, [])
    assert.deepEqual(await generate(world.nodes[1].model, hosted.session, [pendings[i]], 12), expected[i])
    world.nodes[1].service.sessions.remove(`drain-${i}`)
  }
  world.nodes[0].service.sessions.setAccepting(true)
})

test('checkpoints restore on another node, whole and then incrementally, and continue exactly', async () => {
  const [a, b] = world.nodes
  const prompt = promptIds(25, 11)
  const expected = await reference(prompt, 4 + 6, 12)
  const pending = await startSession(0, 'ckpt', prompt, 4)
  const hosted = a.service.sessions.require('ckpt')
  const first = a.service.checkpoint('ckpt', { blockTokens: 8, chunkBytes: 4096 })
  assert.equal(first.header.positionStart, 0)
  assert.equal(first.header.tokenIds, null)
  const firstBytes = await collect(first.records())
  // the session runs on after the snapshot; the checkpoint is unaffected
  const more = await generate(a.model, hosted.session, [pending], 6)
  const positions = sessionPositions(hosted.session)
  assert.equal(positions, 25 + 3 + 6)
  const delta = await collect(a.service.checkpoint('ckpt', { fromPosition: first.header.seqLen }).records())

  // a checkpoint signed by someone else is refused when the producer is pinned
  const other = await otherIdentity()
  await assert.rejects(b.service.restore(firstBytes, { sessionId: 'ckpt', producer: other.publicKey }), { code: 'ERR_USXF_PRODUCER' })
  assert.equal(b.service.sessions.has('ckpt'), false)
  // a delta needs the session it continues
  await assert.rejects(b.service.restore(delta, { sessionId: 'ckpt' }), { code: 'ERR_USXF_SHAPE_MISMATCH' })

  const restored = await b.service.restore(firstBytes, { sessionId: 'ckpt', producer: world.swarm.nodes[0].identity.publicKey })
  assert.equal(sessionPositions(restored.session), first.header.seqLen)
  const digest = sessionDigest(restored.session)
  await assert.rejects(b.service.restore(firstBytes, { sessionId: 'ckpt' }), { code: 'ERR_USXF_SESSION_BUSY' })
  assert.equal(sessionDigest(restored.session), digest)
  await b.service.restore(delta, { sessionId: 'ckpt' })
  assert.equal(sessionPositions(restored.session), positions)
  assert.deepEqual(await generate(b.model, restored.session, [more[more.length - 1]], 12), expected)
  a.service.sessions.remove('ckpt')
  b.service.sessions.remove('ckpt')
})

test('a draining target, or one that already hosts the session id, refuses and nothing moves', async () => {
  await startSession(0, 'refused', promptIds(12, 12), 2)
  const before = sessionDigest(world.nodes[0].service.sessions.require('refused').session)
  world.nodes[1].service.sessions.setAccepting(false)
  try {
    await assert.rejects(world.nodes[0].service.migrate('refused', peer(1), { mode: 'always' }), { code: 'ERR_USXF_REFUSED' })
  } finally {
    world.nodes[1].service.sessions.setAccepting(true)
  }
  const occupant = world.nodes[1].model.newSession()
  world.nodes[1].service.sessions.add('refused', world.nodes[1].model, occupant)
  await assert.rejects(world.nodes[0].service.migrate('refused', peer(1), { mode: 'always' }), { code: 'ERR_USXF_SESSION_BUSY' })
  assert.equal(world.nodes[1].service.sessions.require('refused').session, occupant)
  const hosted = world.nodes[0].service.sessions.require('refused')
  assert.equal(hosted.state, 'live')
  assert.equal(sessionDigest(hosted.session), before)
  // and a session already being migrated cannot be migrated twice at once
  hosted.state = 'busy'
  await assert.rejects(world.nodes[0].service.migrate('refused', peer(2)), { code: 'ERR_USXF_SESSION_BUSY' })
  hosted.state = 'live'
  world.nodes[0].service.sessions.remove('refused')
  world.nodes[1].service.sessions.remove('refused')
})
