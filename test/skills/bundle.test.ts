import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { SIGNATURE_CONTEXTS } from '../../src/identity/index.ts'
import {
  assembleBundle, compareSemver, decodeBundle, encodeManifest, MAX_BUNDLE_BYTES, packSkill, parseSemver, parseSkillMd, renderFrontMatter, sha256Hex, SKILL_LIMITS, SkillError, type SkillManifest
} from '../../src/skills/index.ts'
import { assertRefused, newIdentity, skillMd, tempDir, writeSkill } from './helpers.ts'

const encode = (text: string): Uint8Array => new TextEncoder().encode(text)

function assertSkillError (fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SkillError, `expected a SkillError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (pattern != null) assert.match(err.message, pattern)
    return true
  })
}

test('a skill directory packs into a deterministic signed bundle that decodes and verifies', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const author = await newIdentity()
  await writeSkill(join(dir, 'greet'))
  const a = await packSkill(join(dir, 'greet'), author)
  const b = await packSkill(join(dir, 'greet'), author)
  assert.equal(a.id, b.id)
  assert.deepEqual(Buffer.from(a.bytes), Buffer.from(b.bytes))
  assert.equal(a.id, sha256Hex(a.manifestBytes))
  assert.deepEqual(a.manifest.files.map((f) => f.path), ['SKILL.md', 'lib/words.txt', 'run.sh'])
  assert.equal(a.manifest.files.find((f) => f.path === 'run.sh')?.executable, true)
  assert.equal(a.manifest.files.find((f) => f.path === 'lib/words.txt')?.executable, false)
  assert.equal(a.manifest.name, 'greet')
  assert.equal(a.manifest.version, '1.0.0')
  assert.deepEqual(a.manifest.inputs, [{ name: 'who', type: 'string', required: true, description: 'whom to greet' }])
  assert.equal(a.manifest.author, Buffer.from(author.publicKey).toString('hex'))
  const decoded = decodeBundle(a.bytes, a.id)
  assert.equal(decoded.id, a.id)
  assert.equal(Buffer.from(decoded.files.find((f) => f.file.path === 'run.sh')?.data ?? []).toString(), '#!/bin/sh\necho "hello $1"\n')
  // another author: another manifest, another id
  const other = await packSkill(join(dir, 'greet'), await newIdentity())
  assert.notEqual(other.id, a.id)
})

test('a byte changed anywhere in a bundle is refused with a clear error', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const bundle = await packSkill(await writeSkill(join(dir, 'greet')), await newIdentity())
  const flip = (offset: number): Uint8Array => { const copy = new Uint8Array(bundle.bytes); copy[offset] ^= 1; return copy }
  // in the last file's bytes
  assertSkillError(() => decodeBundle(flip(bundle.bytes.byteLength - 2), bundle.id), 'ERR_SKILL_TAMPERED', /run\.sh .*does not match its SHA-256/)
  // in the manifest: the id no longer matches; without an expected id, the signature fails
  assertSkillError(() => decodeBundle(flip(12 + 40), bundle.id), 'ERR_SKILL_TAMPERED', /not the announced bundle id/)
  // in the signature
  assertSkillError(() => decodeBundle(flip(12 + bundle.manifestBytes.byteLength + 3), bundle.id), 'ERR_SKILL_BAD_SIGNATURE')
  // truncated, extended, not a bundle
  assertSkillError(() => decodeBundle(bundle.bytes.subarray(0, bundle.bytes.byteLength - 1), bundle.id), 'ERR_SKILL_TAMPERED', /its manifest says/)
  assertSkillError(() => decodeBundle(new Uint8Array([...bundle.bytes, 0]), bundle.id), 'ERR_SKILL_TAMPERED')
  assertSkillError(() => decodeBundle(encode('hello world, not a bundle at all, but long enough to have a header and more bytes')), 'ERR_SKILL_BUNDLE', /magic/)
  assertSkillError(() => decodeBundle(new Uint8Array(MAX_BUNDLE_BYTES + 1)), 'ERR_SKILL_TOO_LARGE')
})

test('SKILL.md front matter: missing, unclosed, incomplete, unknown keys, tabs and bad values are refused by line', () => {
  const good = parseSkillMd(encode(skillMd()))
  assert.equal(good.name, 'greet')
  assert.deepEqual(parseSkillMd(encode(renderFrontMatter(good))), good)
  assertSkillError(() => parseSkillMd(encode('# greet\nno front matter')), 'ERR_SKILL_FRONT_MATTER', /must start with a front matter block/)
  assertSkillError(() => parseSkillMd(encode('---\nname: greet\n')), 'ERR_SKILL_FRONT_MATTER', /not closed/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ name: '' }))), 'ERR_SKILL_FRONT_MATTER', /no "name"/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ name: 'Bad Name' }))), 'ERR_SKILL_FRONT_MATTER', /line 2: name "Bad Name"/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ extra: 'license: MIT' }))), 'ERR_SKILL_FRONT_MATTER', /unknown key "license"/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ extra: 'name: again' }))), 'ERR_SKILL_FRONT_MATTER', /"name" is repeated/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ description: '\tindented' }))), 'ERR_SKILL_FRONT_MATTER', /tabs/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ description: '[a, b]' }))), 'ERR_SKILL_FRONT_MATTER', /may not start with "\["/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ description: '"unterminated' }))), 'ERR_SKILL_FRONT_MATTER', /double-quoted/)
  assertSkillError(() => parseSkillMd(encode(skillMd({ runner: 'Bash Shell' }))), 'ERR_SKILL_FRONT_MATTER', /runner/)
  assertSkillError(() => parseSkillMd(encode(skillMd().replace('type: string', 'type: text'))), 'ERR_SKILL_FRONT_MATTER', /type: one of/)
  assertSkillError(() => parseSkillMd(encode(skillMd().replace('required: true', 'required: yes'))), 'ERR_SKILL_FRONT_MATTER', /true or false/)
  assertSkillError(() => parseSkillMd(new Uint8Array([0x2d, 0x2d, 0x2d, 0x0a, 0xff, 0x0a])), 'ERR_SKILL_FRONT_MATTER', /UTF-8/)
  // a quoted value may hold what a plain one may not
  assert.equal(parseSkillMd(encode(skillMd({ description: '"[a, b] # not a comment"' }))).description, '[a, b] # not a comment')
})

test('versions must be semver: non-semver and build metadata are refused; precedence follows semver 2.0.0', () => {
  for (const version of ['1.0', '01.0.0', 'v1.0.0', '1.0.0.0', '1.0.0-', '1.0.0-01', 'latest']) {
    assertSkillError(() => parseSkillMd(encode(skillMd({ version }))), 'ERR_SKILL_VERSION', /not semver/)
  }
  assertSkillError(() => parseSemver('1.0.0+build.5'), 'ERR_SKILL_VERSION', /build metadata/)
  const ordered = ['0.9.9', '1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.2.0', '1.10.0', '10.0.0']
  for (let i = 1; i < ordered.length; i++) {
    assert.equal(compareSemver(ordered[i - 1], ordered[i]), -1, `${ordered[i - 1]} < ${ordered[i]}`)
    assert.equal(compareSemver(ordered[i], ordered[i - 1]), 1)
  }
  assert.equal(compareSemver('1.0.0', '1.0.0'), 0)
})

test('packing refuses a missing SKILL.md, symlinks, special files, escaping entries and bundles over the limits', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const author = await newIdentity()

  await mkdir(join(dir, 'empty'))
  await writeFile(join(dir, 'empty', 'run.sh'), 'echo\n')
  await assertRefused(packSkill(join(dir, 'empty'), author), 'ERR_SKILL_FRONT_MATTER', /has no SKILL\.md/)
  await assertRefused(packSkill(join(dir, 'nowhere'), author), 'ERR_SKILL_FRONT_MATTER', /cannot read/)

  const linked = await writeSkill(join(dir, 'linked'))
  await symlink('/etc/passwd', join(linked, 'lib', 'passwd'))
  await assertRefused(packSkill(linked, author), 'ERR_SKILL_PATH', /lib\/passwd is a symbolic link/)

  const special = await writeSkill(join(dir, 'special'))
  const server = createServer()
  server.listen(join(special, 'agent.sock'))
  await once(server, 'listening')
  t.after(() => { server.close() })
  await assertRefused(packSkill(special, author), 'ERR_SKILL_PATH', /agent\.sock is not a regular file or directory/)

  await assertRefused(packSkill(await writeSkill(join(dir, 'dotdot'), { md: skillMd({ entry: '../outside.sh' }) }), author), 'ERR_SKILL_PATH', /escapes the bundle/)
  await assertRefused(packSkill(await writeSkill(join(dir, 'absolute'), { md: skillMd({ entry: '/bin/sh' }) }), author), 'ERR_SKILL_PATH', /absolute/)
  await assertRefused(packSkill(await writeSkill(join(dir, 'noentry'), { md: skillMd({ entry: 'missing.sh' }) }), author), 'ERR_SKILL_FRONT_MATTER', /entry missing\.sh is not a file/)
  await assertRefused(packSkill(await writeSkill(join(dir, 'badversion'), { version: '2' }), author), 'ERR_SKILL_VERSION')

  const big = await writeSkill(join(dir, 'big'), { files: { 'run.sh': 'echo\n', 'data.bin': new Uint8Array(SKILL_LIMITS.maxFileBytes + 1) } })
  await assertRefused(packSkill(big, author), 'ERR_SKILL_TOO_LARGE', /data\.bin is 1048577 bytes; the limit is 1048576/)
  const third = Math.floor(SKILL_LIMITS.maxTotalBytes / 3) + 1
  const total = await writeSkill(join(dir, 'total'), { files: { 'run.sh': 'echo\n', 'a.bin': new Uint8Array(third), 'b.bin': new Uint8Array(third), 'c.bin': new Uint8Array(third) } })
  await assertRefused(packSkill(total, author), 'ERR_SKILL_TOO_LARGE', /together/)
  // a node may pack with lower limits, never higher ones
  await assertRefused(packSkill(await writeSkill(join(dir, 'small')), author, { maxFileBytes: 8 }), 'ERR_SKILL_TOO_LARGE')
  await assertRefused(packSkill(await writeSkill(join(dir, 'small2')), author, { maxFileBytes: SKILL_LIMITS.maxFileBytes + 1 }), 'ERR_SKILL_TOO_LARGE', /must be a whole number/)
})

test('a signed bundle whose manifest names escaping paths is refused on decode', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const author = await newIdentity()
  const good = await packSkill(await writeSkill(join(dir, 'greet')), author)
  const contents = good.files.map((f) => f.data)
  const forge = (change: (m: SkillManifest) => SkillManifest): Uint8Array => {
    const manifest = change(structuredClone(good.manifest))
    const bytes = encodeManifest(manifest)
    return assembleBundle(bytes, author.sign(SIGNATURE_CONTEXTS.skillManifest, bytes), contents)
  }
  const renamed = (path: string) => (m: SkillManifest): SkillManifest => ({ ...m, files: m.files.map((f) => f.path === 'lib/words.txt' ? { ...f, path } : f) })
  assertSkillError(() => decodeBundle(forge(renamed('../words.txt'))), 'ERR_SKILL_PATH', /escapes the bundle/)
  assertSkillError(() => decodeBundle(forge(renamed('/etc/words.txt'))), 'ERR_SKILL_PATH', /absolute/)
  assertSkillError(() => decodeBundle(forge(renamed('lib\\..\\..\\x'))), 'ERR_SKILL_PATH', /backslash/)
  assertSkillError(() => decodeBundle(forge(renamed('lib/./words.txt'))), 'ERR_SKILL_PATH')
  assertSkillError(() => decodeBundle(forge(renamed('.permagent-skill.json'))), 'ERR_SKILL_PATH', /reserved/)
  assertSkillError(() => decodeBundle(forge((m) => ({ ...m, entry: '../run.sh' }))), 'ERR_SKILL_PATH', /escapes/)
  assertSkillError(() => decodeBundle(forge((m) => ({ ...m, files: [...m.files].reverse() }))), 'ERR_SKILL_BUNDLE', /sorted/)
  assertSkillError(() => decodeBundle(forge((m) => ({ ...m, description: 'not what SKILL.md says' }))), 'ERR_SKILL_BUNDLE', /disagree/)
  // signed by someone else than the manifest's author
  const other = await newIdentity()
  const bytes = good.manifestBytes
  assertSkillError(() => decodeBundle(assembleBundle(bytes, other.sign(SIGNATURE_CONTEXTS.skillManifest, bytes), contents)), 'ERR_SKILL_BAD_SIGNATURE')
  // signed under another context (domain separation)
  assertSkillError(() => decodeBundle(assembleBundle(bytes, author.sign(SIGNATURE_CONTEXTS.shard, bytes), contents)), 'ERR_SKILL_BAD_SIGNATURE')
})
