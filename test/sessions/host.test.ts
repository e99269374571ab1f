import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { importModel } from '../../src/model/index.ts'
import { LocalModel } from '../../src/inference/index.ts'
import { createSwarm, type Swarm } from '../../src/simulation/index.ts'
import { waitFor } from '../../src/util/index.ts'
import type { Permagent } from '../../src/permagent.ts'
import { tempDir, tinyCheckpoint, type TempDir } from '../model/fixtures.ts'

// Node 0 and 1 store the same tiny model; node 0 also stores "other" (different weights), which
// node 1 lacks. Node 1 hosts at most 4 sessions.
let dir: TempDir
let swarm: Swarm
let reference: LocalModel
const nodes = (): Permagent[] => swarm.nodes

before(async () => {
  dir = await tempDir('permagent-sessions-')
  const tiny = await tinyCheckpoint(join(dir.path, 'tiny'))
  const other = await tinyCheckpoint(join(dir.path, 'other'), { seed: 8 })
  swarm = await createSwarm({ nodes: 2, topology: 'full', nodeOptions: (i) => ({ sessions: { limits: i === 1 ? { maxSessions: 4 } : { maxTokensPerCall: 64, idleMs: 60_000 }, migration: { readTimeoutMs: 10_000 } } }) })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 20_000 })
  for (const node of swarm.nodes) await importModel(node.dataDir, { source: tiny, name: 'tiny' })
  await importModel(swarm.nodes[0].dataDir, { source: other, name: 'other' })
  reference = await LocalModel.open({ dataDir: swarm.nodes[0].dataDir, name: 'tiny' })
})

after(async () => {
  await reference?.close()
  await swarm?.stop()
  await dir?.cleanup()
})

const prompt = (seed: number): number[] => Array.from({ length: 12 }, (_, i) => 3 + ((i * 37 + seed * 101) % 250))

/** An uninterrupted greedy run of `count` tokens, without stop tokens. */
async function uninterrupted (promptIds: number[], count: number): Promise<number[]> {
  return (await reference.generate({ promptIds, maxTokens: count, stopTokens: [] })).tokens
}

test('a hosted session generates in steps exactly like one uninterrupted run', async () => {
  const host = nodes()[0].sessions
  const expected = await uninterrupted(prompt(1), 12)
  const created = await host.create({ model: 'tiny', promptIds: prompt(1), maxTokens: 5, stopTokens: [], id: 'steps' })
  assert.deepEqual(created.tokens, expected.slice(0, 5))
  assert.equal(created.session.positions, 12 + 4, 'the last token is held, not fed')
  assert.equal(created.session.pendingToken, expected[4])
  const more = await host.generate('steps', { maxTokens: 7 })
  assert.deepEqual(more.tokens, expected.slice(5))
  const view = host.get('steps')
  assert.deepEqual(view.output, expected)
  assert.equal(view.origin, 'created')
  assert.equal(view.promptTokens, 12)
  assert.ok(host.list().some((s) => s.id === 'steps'))
  host.close('steps')
  assert.throws(() => host.get('steps'), { code: 'ERR_SESSION_NOT_FOUND' })
})

test('a new turn of text is fed after the pending token, without a second BOS', async () => {
  const host = nodes()[0].sessions
  const tokenizer = reference.tokenizer
  assert.ok(tokenizer !== null, 'the synthetic model has a tokenizer')
  const created = await host.create({ model: 'tiny', prompt: 'hello world', maxTokens: 2, stopTokens: [], id: 'turns' })
  const turn = tokenizer.encode('again hello', { addSpecialTokens: false })
  // the same positions fed in one go: prompt, the two generated tokens, the new turn
  const expected = await reference.generate({ promptIds: [...tokenizer.encode('hello world'), ...created.tokens, ...turn], maxTokens: 3, stopTokens: [] })
  const next = await host.generate('turns', { prompt: 'again hello', maxTokens: 3 })
  assert.equal(next.session.positions, created.session.positions + 1 + turn.length + 2)
  assert.deepEqual(next.tokens, expected.tokens)
  host.close('turns')
})

test('a migrated session continues on the target exactly, and leaves the source', async () => {
  const [a, b] = nodes()
  const expected = await uninterrupted(prompt(2), 20)
  await a.sessions.create({ model: 'tiny', promptIds: prompt(2), maxTokens: 6, stopTokens: [], id: 'moving' })
  const result = await a.sessions.migrate('moving', b.mesh.peerId.toString(), { fidelityTokens: 8 })
  assert.equal(result.outcome, 'migrated')
  assert.equal(result.positions, 12 + 5)
  assert.equal(result.fidelity?.verdict, 'exact')
  assert.ok(result.streamBytes > 0 && result.estimate.prefillTokensPerSecond > 0)
  assert.throws(() => a.sessions.get('moving'), { code: 'ERR_SESSION_NOT_FOUND' })
  const arrived = b.sessions.get('moving')
  assert.equal(arrived.origin, 'migrated')
  assert.equal(arrived.pendingToken, expected[5], 'the pending token travelled with the session')
  const continued = await b.sessions.generate('moving', { maxTokens: 14 })
  assert.deepEqual(continued.tokens, expected.slice(6))
  b.sessions.close('moving')
})

test('migration errors are typed and leave the session where it was, still usable', async () => {
  const [a, b] = nodes()
  const target = b.mesh.peerId.toString()
  await assert.rejects(a.sessions.migrate('nobody', target), { code: 'ERR_SESSION_NOT_FOUND' })
  await a.sessions.create({ model: 'other', promptIds: prompt(3), maxTokens: 3, stopTokens: [], id: 'stays' })
  await assert.rejects(a.sessions.migrate('stays', 'not-a-peer'), { code: 'ERR_INVALID_INPUT' })
  await assert.rejects(a.sessions.migrate('stays', a.mesh.peerId.toString()), { code: 'ERR_INVALID_INPUT' })
  const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  await assert.rejects(a.sessions.migrate('stays', stranger.toString()), { code: 'ERR_PEER_NOT_CONNECTED' })
  // node 1 does not store "other": it refuses at the offer
  await assert.rejects(a.sessions.migrate('stays', target), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_USXF_MODEL_MISMATCH')
    assert.match(err.message, /refused session stays.*stays on this node/)
    return true
  })
  const kept = a.sessions.get('stays')
  assert.equal(kept.state, 'live')
  assert.equal(kept.positions, 12 + 2)
  const next = await a.sessions.generate('stays', { maxTokens: 2 })
  assert.equal(next.tokens.length, 2)
  assert.throws(() => b.sessions.get('stays'), { code: 'ERR_SESSION_NOT_FOUND' })
  a.sessions.close('stays')
})

test('limits: tokens per call, one generation at a time, session count (also for migrations in)', async () => {
  const [a, b] = nodes()
  await assert.rejects(a.sessions.create({ model: 'tiny', promptIds: prompt(4), maxTokens: 65 }), { code: 'ERR_INVALID_INPUT' })
  await assert.rejects(a.sessions.create({ model: 'tiny', promptIds: prompt(4), maxTokens: 0 }), { code: 'ERR_INVALID_INPUT' })
  await assert.rejects(a.sessions.create({ model: 'missing', promptIds: prompt(4), maxTokens: 1 }), { code: 'ERR_MODEL_NOT_FOUND' })
  await assert.rejects(a.sessions.create({ model: 'tiny', promptIds: prompt(4), maxTokens: 1, id: 'bad id!' }), { code: 'ERR_INVALID_INPUT' })
  await a.sessions.create({ model: 'tiny', promptIds: prompt(4), maxTokens: 1, stopTokens: [], id: 'one-at-a-time' })
  await assert.rejects(a.sessions.create({ model: 'tiny', promptIds: prompt(4), maxTokens: 1, id: 'one-at-a-time' }), { code: 'ERR_SESSION_BUSY' })
  const first = a.sessions.generate('one-at-a-time', { maxTokens: 40 })
  await assert.rejects(a.sessions.generate('one-at-a-time', { maxTokens: 1 }), { code: 'ERR_SESSION_BUSY' })
  await assert.rejects(a.sessions.migrate('one-at-a-time', b.mesh.peerId.toString()), { code: 'ERR_SESSION_BUSY' })
  assert.throws(() => a.sessions.close('one-at-a-time'), { code: 'ERR_SESSION_BUSY' })
  assert.equal(a.sessions.get('one-at-a-time').state, 'generating')
  assert.equal((await first).tokens.length, 40)

  // node 1 holds 4 sessions: a fifth is refused, whether created there or migrated in
  for (let i = 0; i < 4; i++) await b.sessions.create({ model: 'tiny', promptIds: prompt(5 + i), maxTokens: 1, id: `full-${i}` })
  await assert.rejects(b.sessions.create({ model: 'tiny', promptIds: prompt(9), maxTokens: 1 }), { code: 'ERR_SESSION_LIMIT' })
  await assert.rejects(a.sessions.migrate('one-at-a-time', b.mesh.peerId.toString()), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_USXF_REFUSED')
    assert.match(err.message, /limit of 4 sessions/)
    return true
  })
  assert.equal(a.sessions.get('one-at-a-time').state, 'live')
  for (let i = 0; i < 4; i++) b.sessions.close(`full-${i}`)
  a.sessions.close('one-at-a-time')
})

test('a failed generation call leaves the session as it was', async () => {
  const host = nodes()[0].sessions
  const expected = await uninterrupted(prompt(10), 8)
  await host.create({ model: 'tiny', promptIds: prompt(10), maxTokens: 4, stopTokens: [], id: 'rollback' })
  const before = host.get('rollback')
  // a cancelled call (the client went away): aborted before or during its steps
  const controller = new AbortController()
  const call = host.generate('rollback', { maxTokens: 60, signal: controller.signal })
  controller.abort(new Error('client went away'))
  await assert.rejects(call)
  // a call that runs past the context
  await assert.rejects(host.generate('rollback', { maxTokens: 10, promptIds: Array.from({ length: 5000 }, () => 5) }), { code: 'ERR_CONTEXT_FULL' })
  const after = host.get('rollback')
  assert.equal(after.positions, before.positions)
  assert.equal(after.pendingToken, before.pendingToken)
  assert.deepEqual((await host.generate('rollback', { maxTokens: 4 })).tokens, expected.slice(4))
  host.close('rollback')
})

test('drain moves every hosted session without replay, and the node takes no new ones', async () => {
  const [a, b] = nodes()
  const prompts = [prompt(11), prompt(12), prompt(13)]
  const expected = await Promise.all(prompts.map(async (p) => await uninterrupted(p, 10)))
  for (let i = 0; i < 3; i++) await a.sessions.create({ model: 'tiny', promptIds: prompts[i], maxTokens: 4, stopTokens: [], id: `drain-${i}` })
  const result = await a.sessions.drain(b.mesh.peerId.toString(), { fidelityTokens: 4 })
  assert.deepEqual(result.failed, [])
  assert.deepEqual(result.migrated.map((r) => r.sessionId).sort(), ['drain-0', 'drain-1', 'drain-2'])
  for (const moved of result.migrated) {
    assert.equal(moved.outcome, 'migrated')
    assert.equal(moved.estimate.forced, true)
    assert.equal(moved.fidelity?.verdict, 'exact')
  }
  assert.deepEqual(a.sessions.list(), [])
  assert.equal(a.sessions.accepting, false)
  await assert.rejects(a.sessions.create({ model: 'tiny', promptIds: prompts[0], maxTokens: 1 }), { code: 'ERR_SESSION_REFUSED' })
  for (let i = 0; i < 3; i++) {
    assert.deepEqual((await b.sessions.generate(`drain-${i}`, { maxTokens: 6 })).tokens, expected[i].slice(4))
  }
  // and nothing migrates into a drained node
  await assert.rejects(b.sessions.migrate('drain-0', a.mesh.peerId.toString()), { code: 'ERR_USXF_REFUSED' })
  assert.equal(b.sessions.get('drain-0').state, 'live')
  for (let i = 0; i < 3; i++) b.sessions.close(`drain-${i}`)
})

test('an idle session expires', async () => {
  const swarmIdle = await createSwarm({ nodes: 1, nodeOptions: () => ({ sessions: { limits: { idleMs: 1000 } } }) })
  try {
    const node = swarmIdle.nodes[0]
    await importModel(node.dataDir, { source: join(dir.path, 'tiny'), name: 'tiny' })
    await node.sessions.create({ model: 'tiny', promptIds: prompt(14), maxTokens: 1, id: 'idle' })
    assert.equal(node.sessions.list().length, 1)
    await waitFor(() => node.sessions.list().length === 0 ? true : undefined, { timeoutMs: 15_000, what: 'the idle session to expire' })
  } finally {
    await swarmIdle.stop()
  }
})

test('a node without sessions drains without reaching the peer, and then takes none', async () => {
  const lone = await createSwarm({ nodes: 1 })
  try {
    const node = lone.nodes[0]
    await importModel(node.dataDir, { source: join(dir.path, 'tiny'), name: 'tiny' })
    const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    assert.deepEqual(await node.sessions.drain(stranger.toString()), { migrated: [], failed: [] })
    assert.equal(node.sessions.accepting, false)
    await assert.rejects(node.sessions.create({ model: 'tiny', promptIds: prompt(15), maxTokens: 1 }), { code: 'ERR_SESSION_REFUSED' })
  } finally {
    await lone.stop()
  }
})
