import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSwarm, waitUntil } from '../../src/simulation/index.ts'
import { PrivateMemoryError } from '../../src/team/index.ts'

test('a team memory remembered on A is recalled on B with A as author; private memories never leave A', async (t) => {
  const swarm = await createSwarm({ nodes: 3, topology: 'full' })
  t.after(async () => { await swarm.stop() })
  await swarm.connect()
  await swarm.waitForTopology()
  const [a, b, c] = swarm.nodes
  const { teamId } = await a.team.createTeam('lab')
  const { token } = await a.team.createInvite(teamId)
  await b.team.join(token)
  await waitUntil(() => a.team.members(teamId).filter((m) => m.active).length === 2, { events: [{ target: a.team.events, type: 'shard' }], timeoutMs: 10_000 })

  const secret = 'zanzibar-7 private password hint'
  const local = await a.shared.remember({ content: secret })
  assert.equal(local.shared, null)
  await assert.rejects(a.shared.share(local.memory.id, teamId), PrivateMemoryError)
  await assert.rejects(a.shared.remember({ content: secret + ' again', visibility: 'private' }, teamId), PrivateMemoryError)

  const shared = await a.shared.remember({ content: 'the centrifuge in room 4 needs recalibration every 30 days', visibility: 'team', kind: 'fact', topic: 'lab' }, teamId)
  assert.ok(shared.shared != null)
  await waitUntil(() => b.shared.recall('centrifuge recalibration', teamId).hits.length > 0, { events: [{ target: b.team.events, type: 'shard' }], timeoutMs: 15_000, what: 'B recalling the team memory' })
  const hit = b.shared.recall('centrifuge recalibration', teamId).hits[0]
  assert.equal(hit.author, a.identity.brainId)
  assert.equal(hit.teamId, teamId)
  assert.equal(hit.signatureValid, true)
  assert.equal(hit.shardId, shared.shared.shardId)
  // it is in B's own brain, marked as a team record by A
  const inBrain = b.brain.recall('centrifuge').hits[0]
  assert.equal(inBrain.source, 'team')
  assert.equal(inBrain.author, a.identity.brainId)

  // an update supersedes; a dispute from B shows up in A's recall
  const updated = await a.shared.remember({ key: 'centrifuge-interval', content: 'new SOP: calibrate the centrifuge fortnightly, 14 days apart, logging each run', visibility: 'team' }, teamId)
  await b.team.dispute(teamId, updated.shared?.shardId ?? '', 'the manual says 30 days')
  await waitUntil(() => a.shared.recall('centrifuge fortnightly SOP', teamId).hits.some((h) => h.disputes.length > 0), { events: [{ target: a.team.events, type: 'shard' }], timeoutMs: 15_000, what: 'the dispute reaching A' })
  const disputed = a.shared.recall('centrifuge fortnightly SOP', teamId).hits.find((h) => h.disputes.length > 0)
  assert.equal(disputed?.disputes[0].author, b.identity.brainId)

  // C is not in the team: it holds nothing of it
  assert.equal(c.brain.recall('centrifuge').hits.length, 0)
  // the private memory reached no other node, in any form
  for (const node of [b, c]) {
    assert.equal(node.brain.recall('zanzibar').hits.length, 0)
    for (const row of node.team.store.index(teamId)) {
      const bytes = node.team.store.getBytes([row.id]).get(row.id)
      assert.ok(!Buffer.from(bytes ?? []).toString('utf8').includes('zanzibar'))
    }
  }
})
