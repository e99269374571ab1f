import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { openBrain, tempDir } from './helpers.ts'
import { createBrain } from '../../src/brain/index.ts'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'

async function seeded (t: Parameters<typeof openBrain>[0]): Promise<Awaited<ReturnType<typeof openBrain>>> {
  const handle = await openBrain(t)
  const { brain } = handle
  brain.remember({ key: 'a', content: 'the first memory about apples' })
  brain.remember({ key: 'a', content: 'the second version about apples and pears' })
  brain.remember({ content: 'a memory about bananas' })
  brain.remember({ content: 'a memory about cherries' })
  brain.relate({ subject: { name: 'Alice', type: 'person' }, predicate: 'works_at', object: 'Acme' })
  brain.forget('a')
  assert.deepEqual(brain.verify({ signatures: true }).problems, [])
  return handle
}

function tamper (dir: string, sql: string): void {
  const db = new Database(join(dir, 'brain.db'))
  db.exec(sql)
  db.close()
}

test('the hash chain catches a row edited behind the engine\'s back', async (t) => {
  const handle = await seeded(t)
  await handle.brain.stop()
  tamper(handle.dir, "UPDATE memories SET content = 'a memory about durians' WHERE content = 'a memory about bananas'")
  const brain = await handle.reopen()
  const report = brain.verify()
  assert.equal(report.ok, false)
  assert.ok(report.problems.some((p) => p.kind === 'row-edited' && p.table === 'memories'), JSON.stringify(report.problems))
  // recall reports the edited row's provenance as invalid (the raw edit did not reach the index)
  const hit = brain.recall('bananas').hits[0]
  assert.equal(hit.content, 'a memory about durians')
  assert.equal(hit.signatureValid, false)
})

test('the hash chain catches deleted rows, deleted log entries, a cut-off tail and forged derived columns', async (t) => {
  const cases: Array<[string, string]> = [
    ['DELETE FROM memories WHERE content = \'a memory about cherries\'', 'row-deleted'],
    ['DELETE FROM log WHERE seq = 3', 'log-missing'],
    ['DELETE FROM log WHERE seq = (SELECT max(seq) FROM log)', 'head-mismatch'],
    ['UPDATE memories SET retracted_at = NULL WHERE retracted_at IS NOT NULL', 'derived-mismatch'],
    ['UPDATE relations SET confidence = 10', 'row-edited'],
    ['UPDATE log SET at = at + 1 WHERE seq = 2', 'chain-broken'],
    ['UPDATE memories SET signature = zeroblob(64) WHERE seq = 3', 'row-edited'],
    ["INSERT INTO entities (id, type, name, recorded_at) VALUES ('x', 'person', 'Mallory', 0)", 'row-unlogged']
  ]
  for (const [sql, kind] of cases) {
    const handle = await seeded(t)
    await handle.brain.stop()
    tamper(handle.dir, sql)
    const report = (await handle.reopen()).verify()
    assert.equal(report.ok, false, sql)
    assert.ok(report.problems.some((p) => p.kind === kind), `${sql}: ${JSON.stringify(report.problems)}`)
  }
})

test('export then import into another brain keeps records, signatures and history', async (t) => {
  const source = await seeded(t)
  const file = join(source.dir, 'export.jsonl')
  const { lines } = source.brain.exportFile(file)
  assert.ok(lines >= 7)
  const target = await openBrain(t)
  const summary = await target.brain.importFile(file)
  assert.equal(summary.memories, 4)
  assert.equal(summary.relations, 1)
  assert.equal(summary.retractions, 2)
  const imported = target.brain.history(source.brain.recall('bananas').hits[0].id)
  assert.equal(imported[0].author, source.brain.brainId)
  assert.equal(imported[0].source, 'import')
  assert.equal(target.brain.recall('bananas').hits[0].signatureValid, true)
  assert.equal(target.brain.recall('bananas', { verifySignatures: true }).hits[0].signatureValid, true)
  assert.deepEqual(target.brain.recall('apples').hits, []) // retracted in the source, retracted here
  assert.deepEqual(target.brain.verify({ signatures: true }).problems, [])
  // importing again adds nothing
  const again = await target.brain.importFile(file)
  assert.equal(again.memories + again.relations + again.retractions, 0)
})

test('import refuses tampered or forged signed records and writes nothing', async (t) => {
  const source = await seeded(t)
  const good = [...source.brain.exportLines()]
  const target = await openBrain(t)
  const before = target.brain.stats().logEntries
  const memoryIndex = good.findIndex((l) => l.includes('bananas'))
  const edited = good.slice()
  edited[memoryIndex] = good[memoryIndex].replace('bananas', 'plantains')
  assert.throws(() => target.brain.importLines(edited), (err: Error & { code?: string, line?: number }) => err.code === 'ERR_BAD_SIGNATURE' && err.line === memoryIndex + 1)
  // the id dropped so only the signature can catch it
  const noId = good.slice()
  const record = JSON.parse(good[memoryIndex]) as Record<string, unknown>
  delete record.id
  record.content = 'a memory about plantains'
  noId[memoryIndex] = JSON.stringify(record)
  assert.throws(() => target.brain.importLines(noId), { code: 'ERR_BAD_SIGNATURE' })
  // a record re-signed by another key but claiming the original author
  const mallory = await identityFromKeyPair(generateEd25519())
  const forged = { ...JSON.parse(good[memoryIndex]) as Record<string, unknown>, author_key: Buffer.from(mallory.publicKey).toString('hex') }
  assert.throws(() => target.brain.importLines([JSON.stringify(forged)]), { code: 'ERR_BAD_SIGNATURE', message: /author key does not match/ })
  assert.equal(target.brain.stats().logEntries, before)
})

test('plain import lines are validated first and signed by this brain', async (t) => {
  const { brain, dir } = await openBrain(t)
  const file = join(dir, 'plain.jsonl')
  const lines = [
    { key: 'tz', content: 'The user lives in the Europe/Berlin time zone', kind: 'fact', topic: 'profile', visibility: 'team', valid_from: '2023-04-01' },
    { content: 'Prefers dark roast coffee, no sugar', kind: 'preference' },
    { type: 'relation', subject: { type: 'person', name: 'User' }, predicate: 'lives_in', object: { type: 'place', name: 'Berlin' } }
  ]
  await writeFile(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n\n')
  const summary = await brain.importFile(file)
  assert.deepEqual({ memories: summary.memories, relations: summary.relations }, { memories: 2, relations: 1 })
  const hit = brain.recall('which time zone is the user in').hits[0]
  assert.equal(hit.key, 'tz')
  assert.equal(hit.visibility, 'team')
  assert.equal(hit.author, brain.brainId)
  assert.equal(hit.validFrom, '2023-04-01T00:00:00.000Z')
  // the same file again changes nothing
  const again = await brain.importFile(file)
  assert.equal(again.memories, 0)
  assert.equal(again.skipped, 3)

  const logBefore = brain.stats().logEntries
  const bad: Array<[string, string | RegExp]> = [
    ['{"content": ""}', 'ERR_INVALID_INPUT'],
    ['{"content": "ok", "valid_from": "last week"}', 'ERR_INVALID_DATE'],
    ['{"content": "ok", "visibility": "secret"}', 'ERR_INVALID_INPUT'],
    ['not json', 'ERR_INVALID_INPUT'],
    ['{"type":"relation","subject":{"type":"person","name":"A"},"predicate":"adores","object":{"type":"person","name":"B"}}', 'ERR_UNKNOWN_PREDICATE'],
    ['{"type":"entity","entity_type":"dragon","name":"Smaug"}', 'ERR_UNKNOWN_TYPE'],
    [JSON.stringify({ content: 'x'.repeat(70_000) }), 'ERR_TOO_LARGE']
  ]
  for (const [line, code] of bad) {
    await writeFile(file, JSON.stringify({ content: 'a valid line first' }) + '\n' + line + '\n')
    await assert.rejects(brain.importFile(file), (err: Error & { code?: string, line?: number }) => err.code === code && err.line === 2 && /^line 2: /.test(err.message), line)
  }
  // invalid UTF-8 in the file
  await writeFile(file, Buffer.concat([Buffer.from('{"content": "ok"}\n{"content": "bad '), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]))
  await assert.rejects(brain.importFile(file), { code: 'ERR_INVALID_INPUT', message: /line 2: not valid UTF-8/ })
  assert.equal(brain.stats().logEntries, logBefore)
})

test('a newer schema is refused; reopening keeps the chain', async (t) => {
  const dir = await tempDir(t)
  const identity = await identityFromKeyPair(generateEd25519())
  const brain = createBrain({ dataDir: dir, identity })
  await brain.start()
  brain.remember({ content: 'persisted across restarts' })
  await brain.stop()
  const again = createBrain({ dataDir: dir, identity })
  await again.start()
  again.remember({ content: 'written after a restart' })
  assert.equal(again.verify().ok, true)
  assert.equal(again.stats().logEntries, 2)
  await again.stop()
  tamper(dir, 'PRAGMA user_version = 99')
  await assert.rejects(createBrain({ dataDir: dir, identity }).start(), { code: 'ERR_SCHEMA_VERSION' })
  assert.ok((await readFile(join(dir, 'brain.db'))).length > 0)
})
