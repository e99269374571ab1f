import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../../src/util/wait-for.ts'
import { runCli, runCliJson, startDaemon, tinyModelDirs } from '../helpers/cli.ts'

// the tiny synthetic model: 4 layers, so the middle is layers 1 and 2; one layer of weights is
// 184,832 bytes f32 and its KV 256 bytes a position: --memory 400000 with one session of 512
// positions (what a mesh run asks for) holds exactly one layer (315,904 bytes)
const ONE_LAYER = ['--memory', '400000', '--max-sessions', '1', '--max-length', '512']

test('three daemons: `serve --layers auto` fills the gaps the pool announces, `model plan` describes the pool, `serve --stop` withdraws', async (t) => {
  const dirs = await tinyModelDirs(t, 3, { prefix: 'permagent-plan-model-' })
  const client = await startDaemon(dirs[0])
  const serverB = await startDaemon(dirs[1], ['--bootstrap', client.info.addresses[0]])
  const serverC = await startDaemon(dirs[2], ['--bootstrap', client.info.addresses[0]])
  t.after(async () => { await client.kill(); await serverB.kill(); await serverC.kill() })

  // an empty pool: B takes the first middle layer
  const servedB = await runCliJson(['serve', 'tiny', '--layers', 'auto', ...ONE_LAYER, '--data-dir', dirs[1]])
  assert.deepEqual(servedB.layers, { start: 1, end: 2 })
  assert.match(servedB.auto.reason, /1 layer fits/)
  // C finds B's record (through the DHT or a connection) and takes the layer nobody serves
  const servedC = await waitFor(async () => {
    const result = await runCliJson(['serve', 'tiny', '--layers', 'auto', ...ONE_LAYER, '--data-dir', dirs[2]])
    return result.layers.start === 2 ? result : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'C choosing the layer B does not serve' })
  assert.deepEqual(servedC.layers, { start: 2, end: 3 })
  assert.deepEqual(servedC.auto.coverage.map((c: { servers: number }) => c.servers), [1, 0])

  const plan = await waitFor(async () => {
    const result = await runCliJson(['model', 'plan', 'tiny', '--json', '--data-dir', dirs[0]])
    return result.servers.length === 2 ? result : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'the plan listing both servers' })
  assert.equal(plan.fits, true)
  assert.deepEqual(plan.uncovered, [])
  assert.deepEqual(plan.coverage.map((c: { peers: string[] }) => c.peers), [[serverB.info.peerId], [serverC.info.peerId]])
  assert.deepEqual(plan.route, [{ start: 1, end: 2, peer: serverB.info.peerId }, { start: 2, end: 3, peer: serverC.info.peerId }])
  for (const s of plan.servers) {
    assert.equal(s.weightBytes, 184_832)
    assert.equal(s.kvBytesPerPosition, 256)
    assert.equal(s.freeMemoryBytes > 0, true)
    assert.equal(typeof s.rttMs, 'number')
  }
  assert.ok(plan.projected.tokensPerSecond > 0)
  assert.equal(plan.projected.localMeasured, false)
  const human = await runCli(['model', 'plan', 'tiny', '--measure-local', '--data-dir', dirs[0]])
  assert.equal(human.code, 0, human.stderr)
  assert.match(human.stdout, /fits the pool: yes, route 1-2@…\S+ -> 2-3@…\S+/)
  assert.match(human.stdout, /projected: [\d.]+ ms\/token = [\d.]+ tokens\/s \(middle [\d.]+ ms from measured RTTs and per-layer compute; local [\d.]+ ms measured here\)/)

  // the mesh run finds the servers the same way
  const run = await runCliJson(['run', 'tiny', '--mesh', '--prompt-ids', '1,2,3', '--max-tokens', '4', '--temperature', '0', '--json', '--data-dir', dirs[0]])
  assert.equal(run.tokens.length, 4)

  // C stops: its record is withdrawn, and the plan shows layer 2 uncovered
  assert.deepEqual(await runCliJson(['serve', '--stop', '--data-dir', dirs[2]]), { stopped: true })
  const after = await runCliJson(['model', 'plan', 'tiny', '--json', '--data-dir', dirs[0]])
  assert.deepEqual(after.servers.map((s: { peer: string }) => s.peer), [serverB.info.peerId])
  assert.deepEqual(after.uncovered, [{ start: 2, end: 3 }])
  assert.equal(after.fits, false)

  // spec planning needs no daemon and no weights
  const spec = await runCliJson(['model', 'plan', '--spec', 'llama-70b', '--quant', 'int4', '--machines', '4x16GB', '--json'])
  assert.equal(spec.fits, true)
  // a stored model's own shape and format against machines, without the daemon
  const stored = await runCliJson(['model', 'plan', 'tiny', '--machines', '2MB,1MB,1MB', '--json', '--data-dir', dirs[0]])
  assert.deepEqual(stored.machines.map((m: { span: unknown }) => m.span), [null, { start: 1, end: 2 }, { start: 2, end: 3 }])
  assert.equal(stored.layerBytes, 184_832)
  assert.equal(stored.fits, true)
  const bad = await runCli(['model', 'plan', '--spec', 'llama-70b', '--machines', 'lots'])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /--machines takes a size like 16GB/)
})
