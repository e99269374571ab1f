import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir, type RunningDaemon } from '../helpers/cli.ts'

// Two daemons, B bootstrapped from A. The same synthetic weights ("tiny") on both; "other"
// (different weights) only on A. The drain test runs last: it leaves A taking no new sessions.
let checkpoints: string | undefined
const dirs: string[] = []
let a: RunningDaemon | undefined
let b: RunningDaemon | undefined
let onA: string[]
let onB: string[]
let peerA: string
let peerB: string
const prompt = ['--prompt-ids', '1,2,3,4,5']

before(async () => {
  checkpoints = await tempDataDir('permagent-session-model-')
  dirs.push(await tempDataDir(), await tempDataDir())
  for (const [name, seed] of [['tiny', '7'], ['other', '8']]) {
    const synth = await runCli(['model', 'synth', '--shape', 'tiny', '--seed', seed, '--out', join(checkpoints, name)])
    assert.equal(synth.code, 0, synth.stderr)
  }
  for (const [dir, name] of [[dirs[0], 'tiny'], [dirs[1], 'tiny'], [dirs[0], 'other']]) {
    const imported = await runCli(['model', 'import', join(checkpoints, name), '--name', name, '--data-dir', dir])
    assert.equal(imported.code, 0, imported.stderr)
  }
  a = await startDaemon(dirs[0])
  b = await startDaemon(dirs[1], ['--bootstrap', a.info.addresses[0]])
  onA = ['--data-dir', dirs[0]]
  onB = ['--data-dir', dirs[1]]
  peerA = a.info.peerId
  peerB = b.info.peerId
  await waitFor(async () => (await runCliJson<{ peers: Array<{ peerId: string }> }>(['peers', ...onA])).peers.some((p) => p.peerId === peerB), { timeoutMs: 30_000, intervalMs: 200, what: 'A connected to B' })
})

after(async () => {
  await a?.kill()
  await b?.kill()
  for (const dir of [...(checkpoints !== undefined ? [checkpoints] : []), ...dirs]) await removeDir(dir)
})

test('two daemons: a session started on A, migrated to B, continues there like an uninterrupted run', async () => {

  const local = await runCliJson(['run', 'tiny', ...prompt, '--max-tokens', '12', '--temperature', '0', ...onA])
  assert.equal(local.finishReason, 'length', 'the reference run is 12 tokens long')

  const started = await runCliJson(['session', 'start', 'tiny', ...prompt, '--max-tokens', '5', '--id', 'chat', ...onA])
  assert.equal(started.id, 'chat')
  assert.deepEqual(started.tokens, local.tokens.slice(0, 5))
  const more = await runCliJson(['session', 'continue', 'chat', '--max-tokens', '3', ...onA])
  assert.deepEqual(more.tokens, local.tokens.slice(5, 8))

  const migrated = await runCliJson(['session', 'migrate', 'chat', '--to', peerB, ...onA])
  assert.equal(migrated.outcome, 'migrated')
  assert.equal(migrated.positions, 5 + 7)
  assert.equal(migrated.fidelity.verdict, 'exact')
  assert.ok(migrated.streamBytes > 0 && migrated.timings.totalMs > 0 && migrated.estimate.forced === true)
  const listedA = await runCliJson(['session', 'list', ...onA])
  assert.deepEqual(listedA.sessions, [])
  const shown = await runCli(['session', 'show', 'chat', ...onA])
  assert.notEqual(shown.code, 0)
  assert.match(shown.stderr, /no session "chat"/)

  const onBView = await runCliJson(['session', 'show', 'chat', ...onB])
  assert.equal(onBView.origin, 'migrated')
  const continued = await runCliJson(['session', 'continue', 'chat', '--max-tokens', '4', ...onB])
  assert.deepEqual([...started.tokens, ...more.tokens, ...continued.tokens], local.tokens)

  // the human form names the estimate, the bytes, the timings and the fidelity verdict
  await runCliJson(['session', 'start', 'tiny', ...prompt, '--max-tokens', '2', '--id', 'back', ...onB])
  const human = await runCli(['session', 'migrate', 'back', '--to', peerA, '--quantization', 'f16', '--force', ...onB])
  assert.equal(human.code, 0, human.stderr)
  assert.match(human.stdout, /migrated to/)
  assert.match(human.stdout, /estimate: transfer .* vs re-prefill/)
  assert.match(human.stdout, /sent \(f16\)/)
  assert.match(human.stdout, /timings: total/)
  assert.match(human.stdout, /fidelity: /)
  const closed = await runCli(['session', 'close', 'back', ...onA])
  assert.equal(closed.code, 0, closed.stderr)
})


test('session errors: unknown id, a peer not connected, a model the target lacks', async () => {

  const unknown = await runCli(['session', 'migrate', 'nope', '--to', peerB, ...onA])
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /no session "nope"/)
  const closeUnknown = await runCli(['session', 'close', 'nope', ...onA])
  assert.equal(closeUnknown.code, 1)
  assert.match(closeUnknown.stderr, /no session "nope"/)

  const local = await runCliJson(['run', 'other', ...prompt, '--max-tokens', '9', '--temperature', '0', ...onA])
  assert.equal(local.finishReason, 'length')
  const started = await runCliJson(['session', 'start', 'other', ...prompt, '--max-tokens', '4', '--id', 'odd', ...onA])
  const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  const notConnected = await runCli(['session', 'migrate', 'odd', '--to', stranger, ...onA])
  assert.equal(notConnected.code, 1)
  assert.match(notConnected.stderr, /is not connected to this node/)
  const badPeer = await runCli(['session', 'migrate', 'odd', '--to', 'somebody', ...onA])
  assert.equal(badPeer.code, 1)
  assert.match(badPeer.stderr, /is not a peer id/)
  const badQuantization = await runCli(['session', 'migrate', 'odd', '--to', peerB, '--quantization', 'f8', ...onA])
  assert.equal(badQuantization.code, 2)

  // B has no model with these weights: it refuses at the offer; the session stays on A and continues
  const refused = await runCli(['session', 'migrate', 'odd', '--to', peerB, ...onA])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /refused session odd: this node has no model .*stays on this node/)
  const kept = await runCliJson(['session', 'show', 'odd', ...onA])
  assert.equal(kept.state, 'live')
  const continued = await runCliJson(['session', 'continue', 'odd', '--max-tokens', '5', ...onA])
  assert.deepEqual([...started.tokens, ...continued.tokens], local.tokens)
  const notOnB = await runCli(['session', 'show', 'odd', ...onB])
  assert.notEqual(notOnB.code, 0)
  const closed = await runCli(['session', 'close', 'odd', ...onA])
  assert.equal(closed.code, 0, closed.stderr)
})

test('drain --to B moves three live sessions without replay; A takes no new sessions', async () => {
  const prompts = ['3,1,4,1,5', '2,7,1,8,2', '1,6,1,8,9']
  const expected: number[][] = []
  for (const ids of prompts) {
    const local = await runCliJson(['run', 'tiny', '--prompt-ids', ids, '--max-tokens', '10', '--temperature', '0', ...onA])
    assert.equal(local.finishReason, 'length')
    expected.push(local.tokens)
  }
  for (let i = 0; i < 3; i++) await runCliJson(['session', 'start', 'tiny', '--prompt-ids', prompts[i], '--max-tokens', '4', '--id', `drain-${i}`, ...onA])
  await runCliJson(['session', 'start', 'other', ...prompt, '--max-tokens', '2', '--id', 'stuck', ...onA])
  const drained = await runCliJson(['drain', '--to', peerB, ...onA])
  const hosted = drained.hostedSessions
  assert.deepEqual(hosted.migrated.map((r: { sessionId: string }) => r.sessionId).sort(), ['drain-0', 'drain-1', 'drain-2'])
  for (const moved of hosted.migrated) {
    // no replay: the caches moved (5 prompt + 3 generated positions), were attached and checked
    assert.equal(moved.outcome, 'migrated')
    assert.equal(moved.positions, 8)
    assert.equal(moved.estimate.forced, true)
    assert.equal(moved.fidelity.verdict, 'exact')
    assert.ok(moved.fidelity.compared > 0 && moved.timings.targetAttachMs >= 0)
  }
  // "stuck" runs a model B lacks: it is reported and stays on A
  assert.deepEqual(hosted.failed.map((f: { sessionId: string, code: string }) => [f.sessionId, f.code]), [['stuck', 'ERR_USXF_MODEL_MISMATCH']])
  const left = await runCliJson(['session', 'list', ...onA])
  assert.deepEqual(left.sessions.map((x: { id: string }) => x.id), ['stuck'])
  assert.equal(left.accepting, false)
  const refused = await runCli(['session', 'start', 'tiny', ...prompt, '--max-tokens', '1', ...onA])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /draining/)
  // a second drain tries what is left again, and says so in the human form
  const again = await runCli(['drain', '--to', peerB, ...onA])
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stdout, /hosted sessions: 0 migrated to .*1 not moved/)
  assert.match(again.stdout, /not moved: session stuck: ERR_USXF_MODEL_MISMATCH/)
  for (let i = 0; i < 3; i++) {
    const view = await runCliJson(['session', 'show', `drain-${i}`, ...onB])
    assert.equal(view.origin, 'migrated')
    assert.equal(view.promptTokens, 0, 'B never saw the prompt replayed')
    const continued = await runCliJson(['session', 'continue', `drain-${i}`, '--max-tokens', '6', ...onB])
    assert.deepEqual(continued.tokens, expected[i].slice(4))
  }
})
