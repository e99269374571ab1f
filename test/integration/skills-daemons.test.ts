import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { readApiToken, readDaemonInfo } from '../../src/client/index.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'
import { skillMd, writeSkill } from '../skills/helpers.ts'

test('two daemons through the CLI: publish on A, install on B byte for byte, yank, refusals, activity and suggest', async (t) => {
  const dirA = await tempDataDir()
  const dirB = await tempDataDir()
  const work = await tempDataDir('permagent-skill-src-')
  t.after(async () => { await removeDir(dirA); await removeDir(dirB); await removeDir(work) })
  const a = await startDaemon(dirA)
  const b = await startDaemon(dirB, ['--bootstrap', a.info.addresses[0]])
  t.after(async () => { await a.kill(); await b.kill() })

  const { teamId } = await runCliJson(['team', 'create', 'skills-team', '--data-dir', dirA])
  const { token } = await runCliJson(['team', 'invite', '--team', teamId, '--data-dir', dirA])
  await runCliJson(['team', 'join', token, '--data-dir', dirB])
  await waitFor(async () => (await runCliJson(['team', 'members', '--team', teamId, '--data-dir', dirA])).members.filter((m: { active: boolean }) => m.active).length === 2,
    { timeoutMs: 20_000, what: 'A seeing B as a member' })

  // refusals are clear
  const badVersion = await runCli(['skill', 'publish', await writeSkill(join(work, 'bad'), { md: skillMd({ version: '1.0' }) }), '--team', teamId, '--data-dir', dirA])
  assert.notEqual(badVersion.code, 0)
  assert.match(badVersion.stderr, /error: version "1\.0" is not semver/)
  const noFront = await runCli(['skill', 'publish', await writeSkill(join(work, 'nofront'), { md: '# just markdown\n' }), '--team', teamId, '--data-dir', dirA])
  assert.match(noFront.stderr, /SKILL\.md must start with a front matter block/)

  const skillDir = await writeSkill(join(work, 'greet'))
  const published = await runCliJson(['skill', 'publish', skillDir, '--team', teamId, '--data-dir', dirA])
  assert.equal(published.name, 'greet')
  assert.match(published.bundle, /^[0-9a-f]{64}$/)

  await waitFor(async () => (await runCliJson(['skill', 'list', '--team', teamId, '--data-dir', dirB])).skills.some((s: { bundle: string }) => s.bundle === published.bundle),
    { timeoutMs: 20_000, what: 'B listing the published skill' })
  const shown = await runCli(['skill', 'show', 'greet@1.0.0', '--data-dir', dirB])
  assert.equal(shown.code, 0, shown.stderr)
  assert.match(shown.stdout, /greet@1\.0\.0 {2}\(available\)/)
  assert.match(shown.stdout, /x +\d+ +[0-9a-f]{12} {2}run\.sh/)

  const installed = await runCliJson(['skill', 'install', 'greet', '--data-dir', dirB])
  assert.equal(installed.version, '1.0.0')
  assert.equal(installed.path, join(dirB, 'skills', 'installed', 'greet'))
  for (const file of ['SKILL.md', 'run.sh', 'lib/words.txt']) {
    assert.deepEqual(await readFile(join(installed.path, file)), await readFile(join(skillDir, file)), file)
  }
  assert.deepEqual(await readFile(join(dirB, 'skills', 'bundles', `${published.bundle}.pgsk`)), await readFile(join(dirA, 'skills', 'bundles', `${published.bundle}.pgsk`)))

  // the author yanks it: B sees the yank, and a fresh install of that version is refused
  await runCliJson(['skill', 'yank', 'greet@1.0.0', '--reason', 'greets too loudly', '--data-dir', dirA])
  const yanked = await waitFor(async () => {
    const listing = await runCli(['skill', 'list', '--data-dir', dirB])
    return /YANKED \(greets too loudly\)/.test(listing.stdout) ? listing : undefined
  }, { timeoutMs: 20_000, what: 'B seeing the yank' })
  assert.match(yanked.stdout, /greet@1\.0\.0/)
  const removed = await runCliJson(['skill', 'remove', 'greet', '--data-dir', dirB])
  assert.equal(removed.name, 'greet')
  const refused = await runCli(['skill', 'install', 'greet@1.0.0', '--data-dir', dirB])
  assert.notEqual(refused.code, 0)
  assert.match(refused.stderr, /was yanked by its author \(greets too loudly\).*--allow-yanked/)

  // activity from an agent runtime: only the argument shape is kept
  const info = await readDaemonInfo(join(dirB, 'daemon.json'))
  assert.ok(info != null)
  const apiToken = await readApiToken(join(dirB, 'api-token'))
  for (const branch of ['release/very-secret-branch', 'main']) {
    const response = await fetch(`${info.apiUrl}/api/skills/activity`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tool: 'open_pull_request', arguments: { branch, draft: true } }),
      signal: AbortSignal.timeout(10_000)
    })
    assert.equal(response.status, 200)
    assert.deepEqual(await response.json(), { recorded: true, shape: '{branch:string,draft:boolean}' })
  }
  const suggest = await runCli(['skill', 'suggest', '--json', '--data-dir', dirB])
  assert.equal(suggest.code, 0, suggest.stderr)
  const { suggestions } = JSON.parse(suggest.stdout)
  assert.equal(suggestions.length, 1)
  assert.equal(suggestions[0].skill, 'open-pull-request-skill')
  assert.match(suggestions[0].draft, /^---\nname: open-pull-request-skill\nversion: 0\.1\.0\n/)
  assert.equal(suggest.stdout.includes('very-secret'), false)
})
