import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createProcessSwarm } from '../../src/simulation/index.ts'
import { repoRoot } from '../helpers/cli.ts'

const built = existsSync(join(repoRoot, 'dist', 'node', 'cli.js'))

test('daemons as child processes on loopback connect, survive a crash and keep their ids', { skip: built ? false : 'dist/ is not built (npm test builds it first)' }, async (t) => {
  const swarm = await createProcessSwarm({ nodes: 3, topology: 'ring' })
  t.after(async () => { await swarm.stop() })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 30_000 })
  await swarm.waitForRoutingTables(1, { timeoutMs: 30_000 })
  const before = swarm.members[1].info.peerId
  await swarm.kill(1)
  const restarted = await swarm.restart(1)
  assert.equal(restarted.info.peerId, before)
  await restarted.api.call('POST', '/api/connect', { multiaddr: swarm.members[0].info.addresses[0] })
  const status = await swarm.status(0)
  assert.ok(status.peers.some((p) => p.peerId === before))
})
