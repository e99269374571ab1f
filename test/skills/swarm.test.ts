import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { NetworkOptions, Permagent } from '../../src/permagent.ts'
import { waitUntil } from '../../src/simulation/index.ts'
import { encodePublish, findBundleProviders, packSkill, type SkillSummary } from '../../src/skills/index.ts'
import { createShard, encodeCanonicalJson } from '../../src/team/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { createTeamSwarm } from '../team/helpers.ts'
import { assertRefused, newIdentity, skillMd, tempDir, writeSkill } from './helpers.ts'

/** Waits until `node` lists a skill matching `match` (listing is a view over the team's shards). */
async function waitForSkill (node: Permagent, match: (s: SkillSummary) => boolean, what: string): Promise<SkillSummary> {
  return await waitFor(async () => (await node.skills.list()).skills.find(match), { timeoutMs: 20_000, what })
}

/** Every file under a directory, path → bytes. */
async function readTree (dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    out.set(path.slice(dir.length + 1), await readFile(path))
  }
  return out
}

async function installedEntries (node: Permagent): Promise<string[]> {
  return (await readdir(join(node.skills.dir, 'installed'))).sort()
}

test('skills across a team: publish, install byte-identical, DHT, tamper, non-members, trust, yank, upgrade, equivocation, membership at publish time', async (t) => {
  const team = await createTeamSwarm(3)
  const work = await tempDir()
  t.after(async () => { await team.stop(); await rm(work, { recursive: true, force: true }) })
  await team.swarm.connect()
  const [a, b, c] = team.swarm.nodes
  const { teamId } = await a.team.createTeam('builders')
  for (const member of [b, c]) {
    const { token } = await a.team.createInvite(teamId)
    await member.team.join(token)
  }
  await waitUntil(() => team.teams.every((s) => [...(s.membership(teamId)?.members.values() ?? [])].filter((m) => m.active).length === 3), {
    events: team.teams.map((s) => ({ target: s.events, type: 'shard' })),
    timeoutMs: 20_000,
    what: 'every node seeing three members'
  })

  await t.test('A publishes; B and C install byte-identical bundles; the DHT names holders', async () => {
    const dir = await writeSkill(join(work, 'greet-1.0.0'))
    const published = await a.skills.publish(dir, teamId)
    assert.equal(published.name, 'greet')
    assert.equal(published.alreadyPublished, false)
    // publishing the same directory again is idempotent
    assert.equal((await a.skills.publish(dir, teamId)).alreadyPublished, true)
    for (const node of [b, c]) await waitForSkill(node, (s) => s.bundle === published.bundle, 'the skill announcement')
    const onB = await b.skills.install('greet')
    assert.equal(onB.version, '1.0.0')
    assert.equal(onB.source, a.mesh.peerId.toString())
    const onC = await c.skills.install('greet@1.0.0')
    assert.equal(onC.bundle, published.bundle)
    const original = await readTree(dir)
    for (const node of [b, c]) {
      const installed = await readTree(join(node.skills.dir, 'installed', 'greet'))
      assert.ok(installed.has('.permagent-skill.json'))
      installed.delete('.permagent-skill.json')
      assert.deepEqual(installed, original)
      assert.deepEqual(await readFile(join(node.skills.dir, 'bundles', `${published.bundle}.pgsk`)), await readFile(join(a.skills.dir, 'bundles', `${published.bundle}.pgsk`)))
    }
    assert.equal(((await readdir(join(b.skills.dir, 'installed', 'greet'), { withFileTypes: true })).length), 4)
    const record = (await b.skills.installed()).find((s) => s.name === 'greet')
    assert.equal(record?.status, 'available')
    assert.equal(record?.author, a.identity.brainId)
    // installing again changes nothing
    assert.equal((await b.skills.install('greet')).alreadyInstalled, true)
    // provider records: C finds holders of the bundle on the DHT
    const providers = await waitFor(async () => {
      const found = await findBundleProviders(c.mesh.libp2p, published.bundle, { signal: AbortSignal.timeout(5_000), max: 3, logger: silentLogger() })
      return found.some((p) => p.equals(a.mesh.peerId)) ? found : undefined
    }, { timeoutMs: 20_000, what: 'a DHT provider record of A for the bundle' })
    assert.ok(providers.length >= 1)
  })

  await t.test('a member not connected to the only holder finds it through the DHT and fetches from it', async () => {
    const solo = await a.skills.publish(await writeSkill(join(work, 'solo'), { md: skillMd({ name: 'solo' }) }), teamId)
    // D joins through B (the invite names B's address) and keeps to one connection
    const d = await team.swarm.addNode({ network: { targetPeers: 1 } as NetworkOptions })
    await d.mesh.connect(b.mesh.addresses()[0], { signal: AbortSignal.timeout(10_000) })
    const { token } = await a.team.createInvite(teamId, { bootstrap: b.mesh.addresses() })
    await d.team.join(token)
    const nodes = [a, b, c, d]
    await waitUntil(() => nodes.every((n) => n.team.membership(teamId)?.isActiveMember(Buffer.from(d.identity.publicKey).toString('hex')) === true), {
      events: nodes.map((n) => ({ target: n.team.events, type: 'shard' })),
      timeoutMs: 20_000,
      what: 'every node seeing D as a member'
    })
    await waitForSkill(d, (s) => s.bundle === solo.bundle, 'the solo skill on D')
    await d.mesh.libp2p.hangUp(a.mesh.peerId)
    assert.equal(d.mesh.libp2p.getConnections(a.mesh.peerId).length, 0)
    const providers = await waitFor(async () => {
      const found = await findBundleProviders(d.mesh.libp2p, solo.bundle, { signal: AbortSignal.timeout(5_000), max: 3, logger: silentLogger() })
      return found.some((p) => p.equals(a.mesh.peerId)) ? found : undefined
    }, { timeoutMs: 20_000, what: 'D finding A as the provider of the solo bundle' })
    assert.deepEqual(providers.map(String), [a.mesh.peerId.toString()], 'A alone holds it')
    const installed = await d.skills.install('solo')
    assert.equal(installed.source, a.mesh.peerId.toString())
  })

  await t.test('a byte tampered in transit or on disk: install refused with a clear error and nothing written', async () => {
    const dir = await writeSkill(join(work, 'tamper'), { md: skillMd({ name: 'tamper' }) })
    const published = await a.skills.publish(dir, teamId)
    await waitForSkill(b, (s) => s.bundle === published.bundle, 'the tamper skill')
    // A's stored copy is damaged after publishing: the bytes B receives do not verify
    const stored = join(a.skills.dir, 'bundles', `${published.bundle}.pgsk`)
    const good = await readFile(stored)
    const bad = Buffer.from(good); bad[bad.length - 3] ^= 0x20
    await writeFile(stored, bad)
    const before = await installedEntries(b)
    await assertRefused(b.skills.install('tamper'), 'ERR_SKILL_TAMPERED', /failed verification: file run\.sh of tamper@1\.0\.0 does not match its SHA-256/)
    assert.deepEqual(await installedEntries(b), before)
    assert.equal(before.includes('tamper'), false)
    assert.equal((await readdir(join(b.skills.dir, 'bundles'))).some((f) => f.startsWith(published.bundle)), false)

    // repaired at the source, B installs; then B's own stored copy is damaged and B reinstalls
    await writeFile(stored, good)
    await b.skills.install('tamper')
    await b.skills.remove('tamper')
    const onB = join(b.skills.dir, 'bundles', `${published.bundle}.pgsk`)
    const copy = await readFile(onB); copy[copy.length - 1] ^= 1
    await writeFile(onB, copy)
    await assertRefused(b.skills.install('tamper'), 'ERR_SKILL_TAMPERED', /stored copy of bundle .* failed verification .*nothing was installed/)
    assert.equal((await installedEntries(b)).includes('tamper'), false)
    assert.ok((await readdir(join(b.skills.dir, 'bundles'))).includes(`${published.bundle}.pgsk.bad`))
    // the next install fetches a good copy from the team
    assert.equal((await b.skills.install('tamper')).source, a.mesh.peerId.toString())
  })

  await t.test('a non-member\'s skill is refused, and an untrusted author\'s is not installed', async () => {
    const stranger = await newIdentity()
    const bundle = await packSkill(await writeSkill(join(work, 'stranger'), { md: skillMd({ name: 'stranger' }) }), stranger)
    const hlc = { wallMs: Date.now(), counter: 0 }
    const byStranger = createShard(stranger, { teamId, kind: 'skill', body: encodePublish(bundle), visibility: 'team', hlc })
    const result = b.team.acceptShards([byStranger.bytes], 'test', teamId)
    assert.equal(result.rejected[0]?.code, 'ERR_SHARD_UNKNOWN_AUTHOR')
    // a member announcing the stranger's signed manifest as if it were theirs
    const relayed = createShard(a.identity, { teamId, kind: 'skill', body: encodePublish(bundle), visibility: 'team', hlc })
    const relayedResult = b.team.acceptShards([relayed.bytes], 'test', teamId)
    assert.equal(relayedResult.rejected[0]?.code, 'ERR_SHARD_BAD_BODY')
    assert.match(relayedResult.rejected[0]?.message ?? '', /did not sign this shard/)
    await assertRefused(b.skills.install('stranger'), 'ERR_SKILL_NOT_FOUND')

    // C's policy denies A: A's skills are refused there
    const dir = await writeSkill(join(work, 'denied'), { md: skillMd({ name: 'denied' }) })
    await a.skills.publish(dir, teamId)
    await waitForSkill(c, (s) => s.name === 'denied', 'the denied skill')
    await writeFile(join(c.skills.dir, 'policy.json'), JSON.stringify({ deny: [a.identity.brainId] }))
    await assertRefused(c.skills.install('denied'), 'ERR_SKILL_UNTRUSTED', /deny list/)
    assert.equal((await installedEntries(c)).includes('denied'), false)
    await rm(join(c.skills.dir, 'policy.json'))
  })

  await t.test('a yanked version is not installed by default; upgrade moves to the newest', async () => {
    const v1 = await a.skills.publish(await writeSkill(join(work, 'deploy-1.0.0'), { md: skillMd({ name: 'deploy', version: '1.0.0' }) }), teamId)
    const v11 = await a.skills.publish(await writeSkill(join(work, 'deploy-1.1.0'), { md: skillMd({ name: 'deploy', version: '1.1.0', body: 'faulty' }) }), teamId)
    await waitForSkill(b, (s) => s.bundle === v11.bundle, 'deploy 1.1.0 on B')
    await assertRefused(b.skills.yank('deploy@1.1.0'), 'ERR_SKILL_NOT_AUTHOR', /only its author/)
    const yanked = await a.skills.yank('deploy@1.1.0', { reason: 'deletes the wrong branch' })
    assert.deepEqual(yanked.bundles, [v11.bundle])
    await waitForSkill(b, (s) => s.bundle === v11.bundle && s.status === 'yanked', 'the yank on B')
    await waitForSkill(b, (s) => s.bundle === v1.bundle, 'deploy 1.0.0 on B')
    const installed = await b.skills.install('deploy')
    assert.equal(installed.version, '1.0.0')
    await assertRefused(b.skills.install('deploy@1.1.0'), 'ERR_SKILL_YANKED', /deletes the wrong branch.*--allow-yanked/)
    assert.equal((await b.skills.installed()).find((s) => s.name === 'deploy')?.version, '1.0.0')
    const forced = await c.skills.install('deploy@1.1.0', { allowYanked: true })
    assert.equal(forced.yanked, true)

    const v12 = await a.skills.publish(await writeSkill(join(work, 'deploy-1.2.0'), { md: skillMd({ name: 'deploy', version: '1.2.0' }) }), teamId)
    await waitForSkill(b, (s) => s.bundle === v12.bundle, 'deploy 1.2.0 on B')
    const upgraded = await b.skills.upgrade('deploy')
    assert.deepEqual(upgraded, [{ name: 'deploy', from: '1.0.0', to: '1.2.0', upgraded: true }])
    assert.equal((await b.skills.installed()).find((s) => s.name === 'deploy')?.version, '1.2.0')
    assert.deepEqual(await b.skills.upgrade('deploy'), [{ name: 'deploy', from: '1.2.0', upgraded: false }])
    const removed = await b.skills.remove('deploy')
    assert.equal(removed.version, '1.2.0')
    assert.equal((await installedEntries(b)).includes('deploy'), false)
    await assertRefused(b.skills.remove('deploy'), 'ERR_SKILL_NOT_INSTALLED')
  })

  await t.test('equivocation: two bundles under one name@version by one author are detected, reported and both refused', async () => {
    const first = await a.skills.publish(await writeSkill(join(work, 'eq-a'), { md: skillMd({ name: 'report', version: '2.0.0' }) }), teamId)
    const otherDir = await writeSkill(join(work, 'eq-b'), { md: skillMd({ name: 'report', version: '2.0.0', body: 'different steps' }) })
    // the skills service will not do it...
    await assertRefused(a.skills.publish(otherDir, teamId), 'ERR_SKILL_EQUIVOCATION', /bump the version/)
    // ...but a modified node can sign and announce it anyway
    const second = await packSkill(otherDir, a.identity)
    await a.team.publish(teamId, 'skill', encodePublish(second), 'team')
    const listing = await waitFor(async () => {
      const list = await b.skills.list({ teamId })
      return list.equivocations.some((e) => e.name === 'report') ? list : undefined
    }, { timeoutMs: 20_000, what: 'B detecting the equivocation' })
    assert.deepEqual(listing.equivocations.find((e) => e.name === 'report'), { author: a.identity.brainId, name: 'report', version: '2.0.0', bundles: [first.bundle, second.id].sort() })
    assert.deepEqual(listing.skills.filter((s) => s.name === 'report').map((s) => s.status), ['equivocated', 'equivocated'])
    await assertRefused(b.skills.install('report'), 'ERR_SKILL_EQUIVOCATION', /2 different bundles as report@2\.0\.0.*all of them are refused/)
    await assertRefused(b.skills.install('report@2.0.0'), 'ERR_SKILL_EQUIVOCATION')
    assert.equal((await installedEntries(b)).includes('report'), false)
  })

  await t.test('install checks the author was a member when publishing: a removal ordered before the announcement refuses it', async () => {
    const late = await c.skills.publish(await writeSkill(join(work, 'late'), { md: skillMd({ name: 'late' }) }), teamId)
    await waitForSkill(b, (s) => s.bundle === late.bundle, 'the late skill on B')
    const announced = b.team.store.get(late.shardId)
    assert.ok(announced != null)
    // A's removal of C, dated just before C's announcement, reaches B after it (concurrent ops)
    const heads = a.team.store.membershipShards(teamId)
    const removal = createShard(a.identity, {
      teamId,
      kind: 'membership',
      body: encodeCanonicalJson({ op: 'remove', member: Buffer.from(c.identity.publicKey).toString('hex'), parents: [heads[heads.length - 1].id] }),
      visibility: 'team',
      hlc: { wallMs: announced.hlc.wallMs - 1, counter: 0 }
    })
    assert.equal(b.team.acceptShards([removal.bytes], 'test', teamId).accepted.length, 1)
    await assertRefused(b.skills.install('late'), 'ERR_SKILL_NOT_MEMBER', /was not a member of the team when publishing/)
    assert.equal((await installedEntries(b)).includes('late'), false)
  })
})
