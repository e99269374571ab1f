import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Identity } from '../../src/identity/index.ts'
import { Catalog, encodePublish, encodeYank, openSkillStore, packSkill, parseAnnouncement, parseSkillSpec, SkillError, type AnnouncedShard, type SkillBundle } from '../../src/skills/index.ts'
import { createShard } from '../../src/team/index.ts'
import { newIdentity, skillMd, tempDir, writeSkill } from './helpers.ts'

const TEAM = 'ab'.repeat(32)
let clock = 1_700_000_000_000

function announce (identity: Identity, body: Uint8Array, teamId = TEAM): AnnouncedShard {
  const shard = createShard(identity, { teamId, kind: 'skill', body, visibility: 'team', hlc: { wallMs: clock++, counter: 0 } })
  return { teamId, shard, announcement: parseAnnouncement(shard) }
}

function codeOf (fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof SkillError) return err.code
    throw err
  }
  return undefined
}

test('catalog: authors, versions, yanks only by the author, equivocation per author across teams', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const alice = await newIdentity()
  const bob = await newIdentity()
  const pack = async (who: Identity, name: string, version: string, body = 'steps'): Promise<SkillBundle> =>
    await packSkill(await writeSkill(join(dir, `${name}-${version}-${body}-${who.brainId.slice(0, 6)}`), { md: skillMd({ name, version, body }) }), who)

  const a1 = await pack(alice, 'greet', '1.0.0')
  const a2 = await pack(alice, 'greet', '1.1.0')
  const b1 = await pack(bob, 'greet', '1.0.0')
  const shards = [announce(alice, encodePublish(a1)), announce(alice, encodePublish(a2)), announce(bob, encodePublish(b1))]
  let catalog = new Catalog(shards)
  assert.equal(codeOf(() => catalog.resolve({ name: 'greet' })), 'ERR_SKILL_AMBIGUOUS')
  assert.equal(catalog.resolve({ name: 'greet' }, { author: alice.brainId.slice(0, 8) }).version, '1.1.0')
  assert.equal(catalog.resolve({ name: 'greet', version: '1.1.0' }).bundle, a2.id, 'only alice has 1.1.0: not ambiguous')
  assert.equal(codeOf(() => catalog.resolve({ name: 'greet' }, { author: 'abc' })), 'ERR_SKILL_NOT_FOUND')
  assert.equal(codeOf(() => catalog.resolve({ name: 'nope' })), 'ERR_SKILL_NOT_FOUND')

  // bob "yanks" alice's 1.1.0: no effect; alice's yank counts
  shards.push(announce(bob, encodeYank({ name: 'greet', version: '1.1.0', bundle: a2.id })))
  catalog = new Catalog(shards)
  assert.equal(catalog.byBundle(a2.id)?.yank, undefined)
  shards.push(announce(alice, encodeYank({ name: 'greet', version: '1.1.0', bundle: a2.id, reason: 'broken' })))
  catalog = new Catalog(shards)
  assert.equal(catalog.byBundle(a2.id)?.yank?.reason, 'broken')
  assert.equal(catalog.resolve({ name: 'greet' }, { author: alice.brainId }).version, '1.0.0')
  assert.equal(codeOf(() => catalog.resolve({ name: 'greet', version: '1.1.0' }, { author: alice.brainId })), 'ERR_SKILL_YANKED')
  assert.equal(catalog.resolve({ name: 'greet', version: '1.1.0' }, { author: alice.brainId, allowYanked: true }).bundle, a2.id)

  // alice publishes other contents as 1.0.0 in a second team: both of hers are refused, bob's 1.0.0 is not affected
  const a1b = await pack(alice, 'greet', '1.0.0', 'other')
  shards.push(announce(alice, encodePublish(a1b), 'cd'.repeat(32)))
  catalog = new Catalog(shards)
  assert.deepEqual(catalog.equivocations(), [{ author: alice.brainId, name: 'greet', version: '1.0.0', bundles: [a1.id, a1b.id].sort() }])
  assert.equal(codeOf(() => catalog.resolve({ name: 'greet', version: '1.0.0' }, { author: alice.brainId })), 'ERR_SKILL_EQUIVOCATION')
  assert.throws(() => catalog.resolve({ name: 'greet' }, { author: alice.brainId }), /no version of greet can be installed: 1\.1\.0 yanked, 1\.0\.0 equivocated, 1\.0\.0 equivocated/)
  assert.equal(catalog.resolve({ name: 'greet' }, { author: bob.brainId }).bundle, b1.id)
  assert.deepEqual(catalog.inTeam('cd'.repeat(32)).map((p) => p.bundle), [a1b.id])
  // the same bundle announced in two teams is one publication
  shards.push(announce(bob, encodePublish(b1), 'cd'.repeat(32)))
  assert.deepEqual(new Catalog(shards).byBundle(b1.id)?.announcements.map((a) => a.teamId), [TEAM, 'cd'.repeat(32)])

  assert.deepEqual(parseSkillSpec('greet@1.2.0'), { name: 'greet', version: '1.2.0' })
  assert.throws(() => parseSkillSpec('greet@latest'), /not a semver version/)
  assert.throws(() => parseSkillSpec('../etc'), /not a skill name/)
})

test('the skills store finishes or undoes what a crash left half-done, and never writes outside a skill directory', async (t) => {
  const root = await tempDir()
  t.after(async () => { await rm(root, { recursive: true, force: true }) })
  const author = await newIdentity()
  const store = openSkillStore(root)
  await store.init()
  const bundle = await packSkill(await writeSkill(join(root, 'src')), author)
  const record = { name: 'greet', version: '1.0.0', bundle: bundle.id, author: author.brainId, authorKey: bundle.manifest.author, teamId: TEAM, installedAt: new Date().toISOString(), yanked: false }
  await store.install(bundle, record)
  assert.deepEqual((await store.installed()).map((r) => r.name), ['greet'])

  // a crash mid-install leaves a temp dir; mid-upgrade, the old version moved aside and no new one
  await mkdir(join(store.installedDir, '.tmp-greet-0123456789ab', 'lib'), { recursive: true })
  await writeFile(join(store.installedDir, '.tmp-greet-0123456789ab', 'lib', 'half'), 'x')
  await mkdir(join(store.installedDir, '.old-deploy-tool-aabbccddeeff'))
  await writeFile(join(store.installedDir, '.old-deploy-tool-aabbccddeeff', '.permagent-skill.json'), JSON.stringify({ ...record, name: 'deploy-tool' }))
  // and an upgrade that completed except for removing the old directory
  await mkdir(join(store.installedDir, '.old-greet-ffeeddccbbaa'))
  await openSkillStore(root).init()
  assert.deepEqual((await readdir(store.installedDir)).sort(), ['deploy-tool', 'greet'])
  assert.equal((await store.record('deploy-tool'))?.name, 'deploy-tool')
  assert.equal(await readFile(join(store.installedDir, 'greet', 'run.sh'), 'utf8'), '#!/bin/sh\necho "hello $1"\n')

  // a bundle whose (checked) manifest were bypassed still cannot write outside: the install is refused whole
  const evil = { ...bundle, manifest: { ...bundle.manifest, name: 'evil' }, files: bundle.files.map((f, i) => i === 0 ? { ...f, file: { ...f.file, path: '../escaped' } } : f) }
  await assert.rejects(store.install(evil, { ...record, name: 'evil' }), /outside the skill directory/)
  assert.deepEqual((await readdir(store.installedDir)).sort(), ['deploy-tool', 'greet'])
  assert.deepEqual((await readdir(root)).includes('escaped'), false)
})
