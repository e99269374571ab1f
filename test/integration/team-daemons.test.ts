import { test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

test('two daemons: a team created on A, joined from B with the token; a team memory remembered on A is recalled on B with A as author', async (t) => {
  const dirA = await tempDataDir()
  const dirB = await tempDataDir()
  t.after(async () => { await removeDir(dirA); await removeDir(dirB) })
  const a = await startDaemon(dirA)
  const b = await startDaemon(dirB, ['--bootstrap', a.info.addresses[0]])
  t.after(async () => { await a.kill(); await b.kill() })
  const idA = await runCliJson(['id', '--data-dir', dirA])

  const { teamId } = await runCliJson(['team', 'create', 'household', '--data-dir', dirA])
  assert.match(teamId, /^[0-9a-f]{64}$/)
  const { token } = await runCliJson(['team', 'invite', '--team', teamId, '--data-dir', dirA])
  const joined = await runCliJson(['team', 'join', token, '--data-dir', dirB])
  assert.equal(joined.teamId, teamId)
  await waitFor(async () => (await runCliJson(['team', 'members', '--team', teamId, '--data-dir', dirA])).members.filter((m: { active: boolean }) => m.active).length === 2,
    { timeoutMs: 20_000, what: 'A seeing B as a member' })

  const remembered = await runCliJson(['remember', 'the boiler service is booked for the 3rd of March', '--visibility', 'team', '--team', teamId, '--data-dir', dirA])
  assert.equal(remembered.shared.teamId, teamId)
  const secret = await runCliJson(['remember', 'the safe code is 4471', '--data-dir', dirA])
  assert.equal(secret.shared, null)

  const recalled = await waitFor(async () => {
    const result = await runCliJson(['recall', 'boiler service', '--team', teamId, '--data-dir', dirB])
    return result.hits.length > 0 ? result : undefined
  }, { timeoutMs: 20_000, what: 'B recalling the team memory' })
  assert.equal(recalled.hits[0].author, idA.brainId)
  assert.match(recalled.hits[0].content, /boiler service/)
  assert.ok(recalled.hits[0].time != null)
  assert.deepEqual(recalled.hits[0].disputes, [])
  // the private one never reached B
  const none = await runCliJson(['recall', 'safe code', '--data-dir', dirB])
  assert.equal(none.hits.length, 0)

  // errors are clear: a damaged token, an unknown team
  const bad = await runCli(['team', 'join', 'pgi1_damaged', '--data-dir', dirB])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /invite token is damaged/)
  const unknown = await runCli(['recall', 'x', '--team', 'ab'.repeat(32), '--data-dir', dirB])
  assert.notEqual(unknown.code, 0)
  assert.match(unknown.stderr, /not in team/)
})
