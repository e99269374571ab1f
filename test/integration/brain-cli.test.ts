import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from '../../src/util/wait-for.ts'
import { cliEntry, removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

async function api (dataDir: string, apiUrl: string, method: string, path: string, body?: unknown): Promise<{ status: number, json: any }> {
  const token = (await readFile(join(dataDir, 'api-token'), 'utf8')).trim()
  const response = await fetch(apiUrl + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: response.status, json: await response.json() }
}

test('the brain from the CLI and the control API against a running daemon', async (t) => {
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(dir) })
  const daemon = await startDaemon(dir)
  t.after(async () => { await daemon.kill() })
  const cli = async (...args: string[]): Promise<any> => await runCliJson([...args, '--data-dir', dir])

  const first = await cli('remember', 'The staging database runs Postgres 16 on the db-2 host', '--key', 'staging.db', '--kind', 'fact', '--topic', 'infra', '--visibility', 'team')
  assert.equal(first.created, true)
  assert.equal(first.memory.visibility, 'team')
  const second = await cli('remember', 'The staging database moved to Postgres 17 on the db-3 host', '--key', 'staging.db', '--kind', 'fact', '--topic', 'infra')
  assert.equal(second.memory.version, 2)
  await cli('remember', 'Prefers short standups, fifteen minutes at most', '--kind', 'preference')

  const recalled = await cli('recall', 'which postgres version does staging run', '--limit', '5')
  assert.equal(recalled.hits[0].id, second.memory.id)
  for (const field of ['id', 'key', 'content', 'score', 'author', 'version', 'signatureValid']) assert.ok(field in recalled.hits[0], field)
  assert.equal(recalled.hits[0].signatureValid, true)
  // the control API answers with the same JSON
  const viaApi = await api(dir, daemon.info.apiUrl, 'POST', '/api/brain/recall', { query: 'which postgres version does staging run', limit: 5 })
  assert.equal(viaApi.status, 200)
  assert.deepEqual(viaApi.json, recalled)
  // as of before the update: the first version
  const asOf = await cli('recall', 'staging postgres', '--as-of', first.memory.recordedAt)
  assert.equal(asOf.hits[0].id, first.memory.id)
  // query syntax in user text is just text
  assert.deepEqual((await cli('recall', '"unbalanced AND (NEAR* OR')).hits, [])

  const history = await cli('history', 'staging.db')
  assert.deepEqual(history.versions.map((v: { version: number }) => v.version), [1, 2])

  await cli('relate', 'Dana', 'works_on', 'Staging Revamp', '--subject-type', 'person', '--object-type', 'project')
  await cli('relate', 'Staging Revamp', 'depends_on', 'Postgres', '--object-type', 'technology')
  const path = await cli('path', 'dana', 'postgres')
  assert.equal(path.paths[0].hops, 2)
  const neighbors = await cli('neighbors', 'Staging Revamp')
  assert.deepEqual(neighbors.neighbors.map((n: { entity: { name: string } }) => n.entity.name).sort(), ['Dana', 'Postgres'])

  const forgotten = await cli('forget', 'staging.db', '--reason', 'decommissioned')
  assert.equal(forgotten.retractions.length, 2)
  assert.deepEqual((await cli('recall', 'staging postgres')).hits, [])

  // errors: a clear message and a non-zero exit, no stack trace
  for (const [args, pattern] of [
    [['remember', ''], /error: content is empty/],
    [['recall', 'x', '--as-of', 'last tuesday'], /error: .*cannot parse "last tuesday" as a date/],
    [['relate', 'Dana', 'adores', 'Postgres'], /error: unknown predicate "adores"; allowed predicates: .*works_at/],
    [['relate', 'Dana', 'knows', 'Zed', '--object-type', 'wizard'], /error: unknown entity type "wizard"; allowed types: .*person/]
  ] as Array<[string[], RegExp]>) {
    const result = await runCli([...args, '--data-dir', dir])
    assert.notEqual(result.code, 0, args.join(' '))
    assert.match(result.stderr, pattern)
    assert.doesNotMatch(result.stderr, /\n\s+at .+:\d+:\d+/)
  }
  const badApi = await api(dir, daemon.info.apiUrl, 'POST', '/api/brain/recall', { query: 5 })
  assert.equal(badApi.status, 400)

  const exported = join(dir, 'export.jsonl')
  assert.ok((await cli('brain', 'export', exported)).lines >= 5)
  const plain = join(dir, 'plain.jsonl')
  await writeFile(plain, [
    JSON.stringify({ key: 'oncall', content: 'Ravi is on call for the payments service this week', kind: 'fact', topic: 'ops', visibility: 'org', valid_from: '2024-06-03' }),
    JSON.stringify({ content: 'The payments service pages through Opsgenie' })
  ].join('\n') + '\n')
  const imported = await cli('brain', 'import', plain)
  assert.equal(imported.memories, 2)
  assert.equal((await cli('recall', 'who is on call for payments')).hits[0].key, 'oncall')

  const stats = await cli('brain', 'stats')
  assert.equal(stats.memories.current, 3)
  assert.equal(stats.relations.current, 2)
  const verified = await cli('brain', 'verify', '--signatures')
  assert.equal(verified.ok, true)
})

test('kill -9 of the daemon during a 50k-memory import: acknowledged batches survive and verify passes', async (t) => {
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(dir) })
  const file = join(dir, 'big.jsonl')
  const lines: string[] = []
  for (let i = 0; i < 50_000; i++) lines.push(JSON.stringify({ key: `k${i}`, content: `import line ${i}: the ${['red', 'green', 'blue', 'amber'][i % 4]} ledger entry ${(i * 7919) % 10007}` }))
  await writeFile(file, lines.join('\n') + '\n')
  let daemon = await startDaemon(dir)
  t.after(async () => { await daemon.kill() })
  const importer = spawn(process.execPath, [cliEntry, 'brain', 'import', file, '--data-dir', dir], { stdio: 'ignore' })
  const acknowledged = (): number => {
    let committed = 0
    for (const line of daemon.output().split('\n')) {
      if (!line.includes('brain import: batch committed')) continue
      try { committed = Math.max(committed, (JSON.parse(line) as { committed: number }).committed) } catch {}
    }
    return committed
  }
  await waitFor(() => acknowledged() >= 3000, { timeoutMs: 120_000, intervalMs: 20, what: 'three import batches to commit' })
  await daemon.kill()
  importer.kill('SIGKILL')
  const acked = acknowledged()
  assert.ok(acked < 50_000, 'the import was still running')

  daemon = await startDaemon(dir)
  const stats = await runCliJson(['brain', 'stats', '--data-dir', dir])
  assert.ok(stats.memories.total >= acked, `${stats.memories.total} stored, ${acked} acknowledged`)
  assert.equal(stats.memories.total % 1000, 0, 'only whole batches')
  const verified = await runCliJson(['brain', 'verify', '--data-dir', dir])
  assert.deepEqual(verified.problems, [])
  for (let i = 0; i < acked; i += Math.max(1, Math.floor(acked / 100))) {
    const history = await api(dir, daemon.info.apiUrl, 'GET', `/api/brain/history/k${i}`)
    assert.equal(history.status, 200, `k${i}`)
  }
  assert.equal((await api(dir, daemon.info.apiUrl, 'GET', `/api/brain/history/k${acked - 1}`)).status, 200)
})
