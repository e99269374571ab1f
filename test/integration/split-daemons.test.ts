import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../../src/util/wait-for.ts'
import { runCli, runCliJson, startDaemon, tinyModelDirs } from '../helpers/cli.ts'

test('three daemons: `serve` spans on two, `run --mesh` on the third equals a local run token for token', async (t) => {
  const dirs = await tinyModelDirs(t, 3, { prefix: 'permagent-split-model-' })
  const client = await startDaemon(dirs[0])
  const serverB = await startDaemon(dirs[1], ['--bootstrap', client.info.addresses[0]])
  const serverC = await startDaemon(dirs[2], ['--bootstrap', client.info.addresses[0]])
  t.after(async () => { await client.kill(); await serverB.kill(); await serverC.kill() })

  const servedB = await runCliJson(['serve', 'tiny', '--layers', '1-2', '--data-dir', dirs[1]])
  assert.deepEqual(servedB.layers, { start: 1, end: 2 })
  await runCliJson(['serve', 'tiny', '--layers', '2-3', '--data-dir', dirs[2]])
  const bad = await runCli(['serve', 'tiny', '--layers', '3-2', '--data-dir', dirs[2]])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /end must be after the start/)

  const args = ['run', 'tiny', '--prompt-ids', '1,2,3,4,5', '--max-tokens', '12', '--temperature', '0', '--json']
  const local = await runCliJson([...args.slice(0, -1), '--data-dir', dirs[0]])
  // identify tells the client which peers now serve the protocol; retry until both spans are known
  const mesh = await waitFor(async () => {
    const result = await runCli([...args, '--mesh', '--activations', 'none', '--data-dir', dirs[0]])
    return result.code === 0 ? JSON.parse(result.stdout) : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'a mesh run over both servers' })
  assert.deepEqual(mesh.tokens, local.tokens)
  assert.deepEqual(mesh.route.map((h: { start: number, end: number }) => [h.start, h.end]), [[1, 2], [2, 3]])
  assert.equal(mesh.route[0].peer, serverB.info.peerId)
  assert.equal(mesh.route[1].peer, serverC.info.peerId)

  // --push: B hands its output straight to C (found through the DHT); same tokens
  const pushed = await runCliJson([...args, '--mesh', '--activations', 'none', '--push', '--data-dir', dirs[0]])
  assert.deepEqual(pushed.tokens, local.tokens)
  assert.equal(pushed.push.disabled, null)
  assert.equal(pushed.push.fallback, null, JSON.stringify(pushed.push))
  assert.ok(pushed.push.steps > 0, 'steps went server to server')
  const localOnly = await runCli([...args, '--push', '--data-dir', dirs[0]])
  assert.notEqual(localOnly.code, 0)
  assert.match(localOnly.stderr, /--push only applies with --mesh/)
})
