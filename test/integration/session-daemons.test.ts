import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

test('two daemons: a session started on A, migrated to B, continues there like an uninterrupted run', async (t) => {
  const checkpoints = await tempDataDir('permagent-session-model-')
  const dirs = [await tempDataDir(), await tempDataDir()]
  t.after(async () => { for (const dir of [checkpoints, ...dirs]) await removeDir(dir) })
  // the same synthetic weights on both nodes; "other" (different weights) only on A
  for (const [name, seed] of [['tiny', '7'], ['other', '8']]) {
    const synth = await runCli(['model', 'synth', '--shape', 'tiny', '--seed', seed, '--out', join(checkpoints, name)])
    assert.equal(synth.code, 0, synth.stderr)
  }
  for (const [dir, name] of [[dirs[0], 'tiny'], [dirs[1], 'tiny'], [dirs[0], 'other']]) {
    const imported = await runCli(['model', 'import', join(checkpoints, name), '--name', name, '--data-dir', dir])
    assert.equal(imported.code, 0, imported.stderr)
  }
  const a = await startDaemon(dirs[0])
  const b = await startDaemon(dirs[1], ['--bootstrap', a.info.addresses[0]])
  t.after(async () => { await a.kill(); await b.kill() })
  const onA = ['--data-dir', dirs[0]]
  const onB = ['--data-dir', dirs[1]]
  const peerB = b.info.peerId
  await waitFor(async () => (await runCliJson<{ peers: Array<{ peerId: string }> }>(['peers', ...onA])).peers.some((p) => p.peerId === peerB), { timeoutMs: 30_000, intervalMs: 200, what: 'A connected to B' })

  const prompt = ['--prompt-ids', '1,2,3,4,5']
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
  const human = await runCli(['session', 'migrate', 'back', '--to', a.info.peerId, '--quantization', 'f16', '--force', ...onB])
  assert.equal(human.code, 0, human.stderr)
  assert.match(human.stdout, /migrated to/)
  assert.match(human.stdout, /estimate: transfer .* vs re-prefill/)
  assert.match(human.stdout, /sent \(f16\)/)
  assert.match(human.stdout, /timings: total/)
  assert.match(human.stdout, /fidelity: /)
  const closed = await runCli(['session', 'close', 'back', ...onA])
  assert.equal(closed.code, 0, closed.stderr)
})

test('session errors: unknown id, a peer not connected, a model the target lacks', async (t) => {
  const checkpoints = await tempDataDir('permagent-session-model-')
  const dirs = [await tempDataDir(), await tempDataDir()]
  t.after(async () => { for (const dir of [checkpoints, ...dirs]) await removeDir(dir) })
  for (const [name, seed] of [['tiny', '7'], ['other', '8']]) {
    const synth = await runCli(['model', 'synth', '--shape', 'tiny', '--seed', seed, '--out', join(checkpoints, name)])
    assert.equal(synth.code, 0, synth.stderr)
  }
  for (const [dir, name] of [[dirs[0], 'tiny'], [dirs[1], 'tiny'], [dirs[0], 'other']]) {
    const imported = await runCli(['model', 'import', join(checkpoints, name), '--name', name, '--data-dir', dir])
    assert.equal(imported.code, 0, imported.stderr)
  }
  const a = await startDaemon(dirs[0])
  const b = await startDaemon(dirs[1], ['--bootstrap', a.info.addresses[0]])
  t.after(async () => { await a.kill(); await b.kill() })
  const onA = ['--data-dir', dirs[0]]
  const peerB = b.info.peerId
  await waitFor(async () => (await runCliJson<{ peers: Array<{ peerId: string }> }>(['peers', ...onA])).peers.some((p) => p.peerId === peerB), { timeoutMs: 30_000, intervalMs: 200, what: 'A connected to B' })

  const unknown = await runCli(['session', 'migrate', 'nope', '--to', peerB, ...onA])
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /no session "nope"/)
  const closeUnknown = await runCli(['session', 'close', 'nope', ...onA])
  assert.equal(closeUnknown.code, 1)
  assert.match(closeUnknown.stderr, /no session "nope"/)

  const prompt = ['--prompt-ids', '1,2,3,4,5']
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
  const onB = await runCli(['session', 'show', 'odd', '--data-dir', dirs[1]])
  assert.notEqual(onB.code, 0)
})
