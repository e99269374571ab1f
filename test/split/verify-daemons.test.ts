import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../../src/util/wait-for.ts'
import { runCli, runCliJson, startDaemon, tinyModelDirs } from '../helpers/cli.ts'

test('four daemons: `run --mesh --verify 1` checks the span that has two servers, reports it in the JSON, and equals a local run', async (t) => {
  const dirs = await tinyModelDirs(t, 4, { prefix: 'permagent-verify-model-' })
  const client = await startDaemon(dirs[0])
  const servers = [await startDaemon(dirs[1], ['--bootstrap', client.info.addresses[0]]), await startDaemon(dirs[2], ['--bootstrap', client.info.addresses[0]]), await startDaemon(dirs[3], ['--bootstrap', client.info.addresses[0]])]
  t.after(async () => { await client.kill(); for (const server of servers) await server.kill() })
  await runCliJson(['serve', 'tiny', '--layers', '1-2', '--data-dir', dirs[1]])
  await runCliJson(['serve', 'tiny', '--layers', '2-3', '--data-dir', dirs[2]])
  await runCliJson(['serve', 'tiny', '--layers', '2-3', '--data-dir', dirs[3]])

  const args = ['run', 'tiny', '--prompt-ids', '1,2,3,4,5', '--max-tokens', '12', '--temperature', '0', '--json']
  const local = await runCliJson([...args.slice(0, -1), '--data-dir', dirs[0]])
  const bad = await runCli([...args, '--mesh', '--verify', '1.5', '--data-dir', dirs[0]])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /--verify is a fraction/)
  // identify tells the client which peers serve the protocol; retry until all three are known
  const mesh = await waitFor(async () => {
    const result = await runCli([...args, '--mesh', '--activations', 'none', '--verify', '1', '--data-dir', dirs[0]])
    if (result.code !== 0) return undefined
    const json = JSON.parse(result.stdout)
    return json.verification?.hops?.[1]?.unavailable === 0 ? json : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'a verified mesh run with two servers for layers 2-3' })
  assert.deepEqual(mesh.tokens, local.tokens)
  assert.deepEqual(mesh.faults, [])
  assert.equal(mesh.verification.rate, 1)
  assert.equal(mesh.verification.hops[1].checks, 12, 'layers 2-3 checked at every step')
  assert.equal(mesh.verification.hops[0].unavailable, 12, 'layers 1-2 have one server: reported unavailable')
  assert.ok(mesh.verification.hops.every((h: { canaries: number }) => h.canaries === 2))
})
