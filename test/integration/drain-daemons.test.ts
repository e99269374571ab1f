import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connectToDaemon } from '../../src/client/index.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { runCli, runCliJson, startDaemon, tinyModelDirs } from '../helpers/cli.ts'

interface Serving { serving: { stats: { sessions: number, steps: number, state: string, handoffs: { out: number, in: number, resumed: number } } } | null }

test('three daemons: /api/drain moves a live mesh generation from one layer server to the other (the run ends as a local run does, nothing replayed); `permagent drain` reports and checks its input', async (t) => {
  const dirs = await tinyModelDirs(t, 3, { prefix: 'permagent-drain-model-' })
  const client = await startDaemon(dirs[0])
  const serverB = await startDaemon(dirs[1], ['--bootstrap', client.info.addresses[0]])
  // the two servers are connected too: the drain streams the session from one to the other
  const serverC = await startDaemon(dirs[2], ['--bootstrap', client.info.addresses[0], '--bootstrap', serverB.info.addresses[0]])
  t.after(async () => { await client.kill(); await serverB.kill(); await serverC.kill() })
  for (const dir of [dirs[1], dirs[2]]) await runCliJson(['serve', 'tiny', '--layers', '1-3', '--data-dir', dir])

  const args = ['run', 'tiny', '--prompt-ids', '1,2,3,4,5', '--max-tokens', '480', '--temperature', '0', '--json']
  const local = await runCliJson([...args.slice(0, -1), '--data-dir', dirs[0]])
  // identify tells the client which peers serve the protocol: wait until a short mesh run works
  let lastAttempt = ''
  await waitFor(async () => {
    const result = await runCli(['run', 'tiny', '--prompt-ids', '1,2,3', '--max-tokens', '1', '--temperature', '0', '--mesh', '--data-dir', dirs[0]])
    lastAttempt = result.stderr
    return result.code === 0 ? true : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'a mesh run over the servers' }).catch((err: Error) => { throw new Error(`${err.message}: ${lastAttempt}`) })

  const apis = [await connectToDaemon(dirs[1]), await connectToDaemon(dirs[2])]
  const stats = async (i: number): Promise<NonNullable<Serving['serving']>['stats']> => {
    const serving = (await apis[i].call<Serving>('GET', '/api/serve')).serving
    assert.ok(serving != null)
    return serving.stats
  }
  const before = [await stats(0), await stats(1)]
  const runStarted = performance.now()
  const run = runCli([...args, '--mesh', '--activations', 'none', '--data-dir', dirs[0]], { timeoutMs: 180_000 })
  // the server the route chose holds the session once it has taken a few steps
  const primary = await waitFor(async () => {
    for (const i of [0, 1]) {
      const now = await stats(i)
      if (now.sessions === 1 && now.steps >= before[i].steps + 4) return i
    }
    return undefined
  }, { timeoutMs: 60_000, intervalMs: 20, what: 'the generation a few steps in on one server' })
  const target = 1 - primary
  const targetDaemon = [serverB, serverC][target]
  // (through the API: a CLI process would start too late for a generation this small; the CLI is checked below)
  const drained = await apis[primary].call<any>('POST', '/api/drain', { to: targetDaemon.info.peerId })
  const result = await run
  t.diagnostic(`generation ${Math.round(performance.now() - runStarted)} ms; drain moved the session at position ${drained.layerSessions.moved[0]?.positions} in ${Math.round(drained.layerSessions.ms)} ms`)
  assert.equal(result.code, 0, result.stderr)
  const mesh = JSON.parse(result.stdout)

  assert.equal(drained.to, targetDaemon.info.peerId)
  assert.equal(drained.layerSessions.moved.length, 1, JSON.stringify(drained.layerSessions.failed))
  assert.deepEqual(drained.layerSessions.failed, [])
  assert.equal(drained.layerSessions.stopped, true)
  assert.ok(drained.layerSessions.moved[0].positions >= 5 + 4, 'moved mid-generation')
  assert.deepEqual(mesh.tokens, local.tokens)
  assert.deepEqual(mesh.failovers, [], 'nothing replayed')
  assert.equal(mesh.handoffs.length, 1, JSON.stringify({ handoffs: mesh.handoffs, route: mesh.route }))
  const moved = await stats(target)
  assert.equal(moved.handoffs.in, 1)
  assert.equal(moved.handoffs.resumed, 1, JSON.stringify({ target: moved, source: await stats(primary).catch(() => null), handoffs: mesh.handoffs, route: mesh.route }))
  const gone = (await apis[primary].call<Serving>('GET', '/api/serve')).serving
  assert.equal(gone, null, 'the drained daemon stopped serving')

  // the command: a node serving nothing says so; a bad peer id is a usage error
  const idle = await runCliJson(['drain', '--to', targetDaemon.info.peerId, '--data-dir', dirs[1 + primary]])
  assert.equal(idle.to, targetDaemon.info.peerId)
  assert.equal(idle.layerSessions, null)
  const human = await runCli(['drain', '--to', targetDaemon.info.peerId, '--data-dir', dirs[1 + primary]])
  assert.match(human.stdout, /layer sessions: not serving a span/)
  const bad = await runCli(['drain', '--to', 'not-a-peer', '--data-dir', dirs[1 + primary]])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /--to takes a peer id/)
})
