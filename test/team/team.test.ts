import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import { createShard, decodeShard, encodeCanonicalJson, MAX_SHARD_BYTES, ShardRejectedError } from '../../src/team/index.ts'
import { alteredMemoryBody, createTeamSwarm, formTeam, memoryBody, waitForCount } from './helpers.ts'

test('forged, wrong-team, unknown-author, oversized, malformed, replayed and future shards are refused and nothing is stored', async (t) => {
  const team = await createTeamSwarm(2)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  const [a, b] = team.teams
  const teamId = await formTeam([a, b])
  const nodeA = team.swarm.nodes[0]
  const before = b.store.count(teamId)
  const good = createShard(nodeA.identity, { teamId, kind: 'memory', body: memoryBody(nodeA, 'good'), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } })

  const expectRejected = (bytes: Uint8Array, code: string): void => {
    const result = b.acceptShards([bytes], 'test', teamId)
    assert.equal(result.accepted.length, 0)
    assert.equal(result.rejected[0]?.code, code, JSON.stringify(result))
  }
  // forged: flip a byte of the signature
  const forged = decodeShard(good.bytes)
  const badSig = new Uint8Array(forged.signature); badSig[5] ^= 1
  const { Shard: ShardWire } = await import('../../src/pb/team.ts')
  expectRejected(ShardWire.encode({ content: new Uint8Array(forged.content), signature: badSig }), 'ERR_SHARD_BAD_SIGNATURE')
  // tampered content under the original signature
  const tampered = new Uint8Array(forged.content); tampered[tampered.length - 1] ^= 1
  expectRejected(ShardWire.encode({ content: tampered, signature: new Uint8Array(forged.signature) }), 'ERR_SHARD_BAD_SIGNATURE')
  // wrong team
  const otherTeam = createShard(nodeA.identity, { teamId: 'ab'.repeat(32), kind: 'memory', body: memoryBody(nodeA, 'x'), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } })
  expectRejected(otherTeam.bytes, 'ERR_SHARD_WRONG_TEAM')
  // unknown author
  const stranger = await identityFromKeyPair(generateEd25519())
  expectRejected(createShard(stranger, { teamId, kind: 'memory', body: alteredMemoryBody(nodeA, 'hi', { author: stranger.brainId, author_key: Buffer.from(stranger.publicKey).toString('hex') }), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } }).bytes, 'ERR_SHARD_UNKNOWN_AUTHOR')
  // oversized
  assert.throws(() => createShard(nodeA.identity, { teamId, kind: 'memory', body: new TextEncoder().encode('x'.repeat(MAX_SHARD_BYTES)), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } }), ShardRejectedError)
  expectRejected(new Uint8Array(MAX_SHARD_BYTES + 1), 'ERR_SHARD_TOO_LARGE')
  // malformed
  expectRejected(new Uint8Array([0xff, 0xff, 0xff, 0x01]), 'ERR_SHARD_MALFORMED')
  expectRejected(createShard(nodeA.identity, { teamId, kind: 'memory', body: new TextEncoder().encode('{"not":"canonical" }'), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } }).bytes, 'ERR_SHARD_BAD_BODY')
  // a memory record claiming another author
  expectRejected(createShard(nodeA.identity, { teamId, kind: 'memory', body: alteredMemoryBody(nodeA, 'impersonation', { author: stranger.brainId }), visibility: 'team', hlc: { wallMs: Date.now(), counter: 0 } }).bytes, 'ERR_SHARD_BAD_BODY')
  // dated far in the future
  expectRejected(createShard(nodeA.identity, { teamId, kind: 'memory', body: memoryBody(nodeA, 'future'), visibility: 'team', hlc: { wallMs: Date.now() + 3_600_000, counter: 0 } }).bytes, 'ERR_SHARD_CLOCK_SKEW')
  assert.equal(b.store.count(teamId), before)
  // replayed: the first delivery is stored, the replay changes nothing
  assert.equal(b.acceptShards([good.bytes], 'test', teamId).accepted.length, 1)
  const replay = b.acceptShards([good.bytes], 'test', teamId)
  assert.equal(replay.accepted.length, 0)
  assert.equal(replay.duplicates, 1)
  assert.equal(b.store.count(teamId), before + 1)
})

test('invites: expired, damaged and reused tokens are refused with clear errors', async (t) => {
  let clock = Date.now()
  const team = await createTeamSwarm(3, { now: () => clock })
  t.after(async () => { await team.stop() })
  const [a, b, c] = team.teams
  const { teamId } = await a.createTeam('ops')
  const { token } = await a.createInvite(teamId, { expiresInMs: 60_000 })
  await assert.rejects(b.join('pgi1_garbage'), /damaged/)
  await assert.rejects(b.join('hello'), /starts with/)
  clock += 120_000
  await assert.rejects(b.join(token), /expired/)
  clock -= 120_000
  await b.join(token)
  clock += 1000
  // a second node using the same one-time invite: it cannot know yet, but the team refuses its join
  await c.join(token)
  const joinOfC = c.store.membershipShards(teamId).find((s) => s.authorKey === Buffer.from(team.swarm.nodes[2].identity.publicKey).toString('hex'))
  assert.ok(joinOfC != null)
  a.acceptShards(b.store.membershipShards(teamId).map((s) => s.bytes), 'test', teamId)
  const result = a.acceptShards([joinOfC.bytes], 'test', teamId)
  assert.equal(result.rejected[0]?.code, 'ERR_SHARD_UNKNOWN_AUTHOR')
  assert.match(result.rejected[0]?.message ?? '', /already used/)
  assert.equal(a.members(teamId).filter((m) => m.active).length, 2)
  // and once c hears of b's earlier join, c learns it is not a member
  c.acceptShards(b.store.membershipShards(teamId).map((s) => s.bytes), 'test', teamId)
  assert.equal(c.membership(teamId)?.isActiveMember(Buffer.from(team.swarm.nodes[2].identity.publicKey).toString('hex')), false)
})

test('a removed member\'s new shards are rejected everywhere; its earlier ones stay', async (t) => {
  const team = await createTeamSwarm(4)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const teamId = await formTeam(team.teams)
  await waitForCount(team.teams, teamId, 4)
  const [admin, , , leaving] = team.teams
  const leavingNode = team.swarm.nodes[3]
  const early = await leaving.publish(teamId, 'memory', memoryBody(leavingNode, 'before removal'), 'team')
  await waitForCount(team.teams, teamId, 5)
  await admin.removeMember(teamId, leavingNode.identity.brainId)
  await waitForCount(team.teams, teamId, 6)
  for (const service of team.teams.slice(0, 3)) {
    assert.equal(service.membership(teamId)?.isActiveMember(Buffer.from(leavingNode.identity.publicKey).toString('hex')), false)
    assert.ok(service.store.has(early.id))
  }
  // the removed node still believes it may publish; nobody accepts it
  const late = createShard(leavingNode.identity, { teamId, kind: 'memory', body: memoryBody(leavingNode, 'after removal'), visibility: 'team', hlc: { wallMs: Date.now() + 1, counter: 0 } })
  for (const service of team.teams.slice(0, 3)) {
    const result = service.acceptShards([late.bytes], 'test', teamId)
    assert.equal(result.rejected[0]?.code, 'ERR_SHARD_REVOKED_AUTHOR')
    assert.equal(service.store.has(late.id), false)
  }
})

test('disputes and supersession carry provenance; superseding another author\'s shard is refused', async (t) => {
  const team = await createTeamSwarm(2)
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const [a, b] = team.teams
  const [nodeA, nodeB] = team.swarm.nodes
  const teamId = await formTeam([a, b])
  const original = await a.publish(teamId, 'memory', memoryBody(nodeA, 'the meeting is on Monday'), 'team')
  const update = await a.publish(teamId, 'memory', memoryBody(nodeA, 'the meeting moved to Tuesday'), 'team', [original.id])
  const dispute = await b.dispute(teamId, update.id, 'the calendar still says Monday')
  await waitForCount([a, b], teamId, 5)
  const seenByA = a.provenance(update.id)
  assert.equal(seenByA?.disputes.length, 1)
  assert.equal(seenByA?.disputes[0].author, nodeB.identity.brainId)
  assert.equal(seenByA?.disputes[0].disputeId, dispute.id)
  assert.deepEqual(b.provenance(original.id)?.supersededBy, [update.id])
  await assert.rejects(b.publish(teamId, 'memory', memoryBody(nodeB, 'hijack'), 'team', [original.id]), (err: unknown) => err instanceof ShardRejectedError && err.code === 'ERR_SHARD_BAD_SUPERSEDES')
})

test('10 nodes form a team by invites and converge on shards published at random nodes', async (t) => {
  const team = await createTeamSwarm(10, { topology: 'random-k' })
  t.after(async () => { await team.stop() })
  await team.swarm.connect()
  await team.swarm.waitForTopology()
  const teamId = await formTeam(team.teams)
  // the membership log (genesis + 9 joins) reaches everyone
  await waitForCount(team.teams, teamId, 10)
  for (const service of team.teams) assert.equal(service.members(teamId).filter((m) => m.active).length, 10)

  const published: string[] = []
  for (let i = 0; i < 40; i++) {
    const author = team.teams[(i * 7) % 10]
    const node = team.swarm.nodes[(i * 7) % 10]
    const shard = await author.publish(teamId, 'memory', memoryBody(node, `finding number ${i}`), 'team')
    published.push(shard.id)
  }
  await waitForCount(team.teams, teamId, 50)
  for (const service of team.teams) {
    for (const id of published) assert.ok(service.store.has(id))
    assert.equal(service.store.count(teamId), 50)
  }
  // provenance: author and time on every node
  const provenance = team.teams[9].provenance(published[3])
  assert.equal(provenance?.author, team.swarm.nodes[(3 * 7) % 10].identity.brainId)
})

test('large batches are verified on worker threads with the same verdicts', async (t) => {
  const team = await createTeamSwarm(2)
  t.after(async () => { await team.stop() })
  const [a, b] = team.teams
  const [nodeA] = team.swarm.nodes
  const teamId = await formTeam([a, b])
  const shards = Array.from({ length: 120 }, (_, i) => createShard(nodeA.identity, { teamId, kind: 'dispute', body: encodeCanonicalJson({ target: 'ab'.repeat(32), reason: `reason ${i}` }), visibility: 'team', hlc: { wallMs: Date.now(), counter: i } }))
  const { Shard: ShardWire } = await import('../../src/pb/team.ts')
  const forged = decodeShard(shards[7].bytes)
  const badSig = new Uint8Array(forged.signature); badSig[0] ^= 1
  const list = shards.map((s) => s.bytes)
  list[7] = ShardWire.encode({ content: new Uint8Array(forged.content), signature: badSig })
  const result = await b.acceptShardsParallel(list, 'test', teamId)
  assert.equal(result.accepted.length, 119)
  assert.deepEqual(result.rejected.map((r) => r.code), ['ERR_SHARD_BAD_SIGNATURE'])
  assert.equal(b.store.has(shards[7].id), false)
})

test('batches handed over together are stored together, each with its own verdicts', async (t) => {
  const team = await createTeamSwarm(2)
  t.after(async () => { await team.stop() })
  const [a, b] = team.teams
  const [nodeA] = team.swarm.nodes
  const teamId = await formTeam([a, b])
  const { Shard: ShardWire } = await import('../../src/pb/team.ts')
  const batches = [0, 1, 2].map((n) => Array.from({ length: 100 }, (_, i) => createShard(nodeA.identity, { teamId, kind: 'dispute', body: encodeCanonicalJson({ target: 'ab'.repeat(32), reason: `batch ${n} reason ${i}` }), visibility: 'team', hlc: { wallMs: Date.now(), counter: i } })))
  const lists = batches.map((shards) => shards.map((s) => s.bytes))
  // the middle batch carries a forged signature and a shard of the first batch again
  const forged = decodeShard(batches[1][5].bytes)
  const badSig = new Uint8Array(forged.signature); badSig[0] ^= 1
  lists[1][5] = ShardWire.encode({ content: new Uint8Array(forged.content), signature: badSig })
  lists[1][6] = batches[0][9].bytes
  const results = await Promise.all(lists.map(async (list) => await b.acceptShardsParallel(list, 'test', teamId)))
  assert.deepEqual(results.map((r) => [r.accepted.length, r.rejected.length, r.duplicates]), [[100, 0, 0], [98, 1, 1], [100, 0, 0]])
  assert.deepEqual(results[1].rejected.map((r) => r.code), ['ERR_SHARD_BAD_SIGNATURE'])
  assert.equal(b.store.has(batches[1][5].id), false)
  for (const [n, shards] of batches.entries()) {
    for (const [i, shard] of shards.entries()) if (!(n === 1 && (i === 5 || i === 6))) assert.ok(b.store.has(shard.id), `batch ${n} shard ${i}`)
  }
})
