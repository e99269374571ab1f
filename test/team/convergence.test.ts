import { test } from 'node:test'
import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { createBrainBridge, createTeamService, type TeamService } from '../../src/team/index.ts'
import { createTeamSwarm, formTeam, memoryBody, waitForCount } from './helpers.ts'

test('a partitioned swarm converges after the partition heals', async (t) => {
  const team = await createTeamSwarm(6)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const teamId = await formTeam(team.teams)
  await waitForCount(team.teams, teamId, 6)
  const nodes = team.swarm.nodes
  const sideOf = (i: number): number => (i < 3 ? 0 : 1)
  // cut every link between the halves and keep it cut
  for (const [i, node] of nodes.entries()) {
    node.mesh.gater.setRule('partition', (peer) => {
      const j = nodes.findIndex((n) => n.mesh.peerId.equals(peer))
      return j < 0 || sideOf(i) === sideOf(j)
    })
  }
  for (const [i, node] of nodes.entries()) {
    for (const [j, other] of nodes.entries()) {
      if (sideOf(i) !== sideOf(j)) await node.mesh.libp2p.hangUp(other.mesh.peerId)
    }
  }
  for (let k = 0; k < 10; k++) {
    for (const i of [0, 4]) await team.teams[i].publish(teamId, 'memory', memoryBody(nodes[i], `side ${sideOf(i)} note ${k}`), 'team')
  }
  await waitForCount(team.teams.slice(0, 3), teamId, 16)
  await waitForCount(team.teams.slice(3), teamId, 16)
  assert.equal(team.teams[1].store.count(teamId), 16)
  assert.equal(team.teams[5].store.count(teamId), 16)
  // heal: anti-entropy on reconnect brings both halves to the union
  for (const node of nodes) node.mesh.gater.removeRule('partition')
  await nodes[2].mesh.connect(nodes[3].mesh.addresses()[0])
  await waitForCount(team.teams, teamId, 26)
  for (const service of team.teams) assert.equal(service.store.count(teamId), 26)
})

test('a late joiner with an invite catches up on everything written before it joined', async (t) => {
  const team = await createTeamSwarm(3)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const teamId = await formTeam(team.teams)
  for (let k = 0; k < 150; k++) {
    const i = k % 3
    await team.teams[i].publish(teamId, 'memory', memoryBody(team.swarm.nodes[i], `earlier work ${k}`), 'team')
  }
  await waitForCount(team.teams, teamId, 153)
  const { token } = await team.teams[1].createInvite(teamId).catch(async () => await team.teams[0].createInvite(teamId))
  const late = await team.swarm.addNode()
  const lateTeam = late.team
  await lateTeam.join(token)
  await late.mesh.connect(team.swarm.nodes[0].mesh.addresses()[0])
  await waitForCount([lateTeam, ...team.teams], teamId, 154, 30_000)
  assert.equal(lateTeam.store.count(teamId), 154)
  assert.equal(lateTeam.members(teamId).filter((m) => m.active).length, 4)
})

test('a node restarted mid-sync loses and duplicates nothing, and sync resumes', async (t) => {
  const team = await createTeamSwarm(2)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const [a, b] = team.teams
  const [nodeA, nodeB] = team.swarm.nodes
  const teamId = await formTeam([a, b])
  await waitForCount([a, b], teamId, 2)
  // B goes away; A writes a lot
  await b.stop()
  await nodeB.mesh.libp2p.hangUp(nodeA.mesh.peerId)
  for (let k = 0; k < 400; k++) await a.publish(teamId, 'memory', memoryBody(nodeA, `while B was away ${k}`), 'team')
  // B comes back with a fresh service over the same database, syncs, and is cut off midway
  const open = (): TeamService => createTeamService({ identity: nodeB.identity, mesh: nodeB.mesh, db: new Database(join(nodeB.dataDir, 'brain.db')), logger: nodeB.logger, syncIntervalMs: 0 })
  const first = open()
  first.setMemoryPort(createBrainBridge({ brain: nodeB.brain, team: first, logger: nodeB.logger }).port)
  await first.start()
  let seen = 0
  first.events.addEventListener('shard', () => { seen++ })
  await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
  const partial = first.syncWith(nodeA.mesh.peerId, teamId, { signal: AbortSignal.timeout(30_000) }).catch(() => undefined)
  await new Promise<void>((resolve) => {
    const check = (): void => { if (seen >= 50) { first.events.removeEventListener('shard', check); resolve() } }
    first.events.addEventListener('shard', check)
    check()
  })
  await first.stop()
  await nodeB.mesh.libp2p.hangUp(nodeA.mesh.peerId)
  await partial
  const midway = first.store.count(teamId)
  assert.ok(midway >= 52 && midway <= 402, `stored ${midway} before the cut`)
  // restart: everything arrives exactly once
  const second = open()
  second.setMemoryPort(createBrainBridge({ brain: nodeB.brain, team: second, logger: nodeB.logger }).port)
  await second.start()
  t.after(async () => { await second.stop() })
  const delivered = new Map<string, number>()
  second.events.addEventListener('shard', (event) => {
    const id = (event as CustomEvent<{ id: string }>).detail.id
    delivered.set(id, (delivered.get(id) ?? 0) + 1)
  })
  await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
  await second.syncWith(nodeA.mesh.peerId, teamId, { signal: AbortSignal.timeout(30_000) })
  await waitForCount([second], teamId, 402)
  assert.equal(second.store.count(teamId), 402)
  assert.equal(second.store.count(teamId), a.store.count(teamId))
  assert.ok([...delivered.values()].every((n) => n === 1))
  assert.equal(delivered.size, 402 - midway)
  // and B's brain holds each of A's 400 memories exactly once
  assert.equal(nodeB.brain.stats().memories.bySource.team, 400)
})
