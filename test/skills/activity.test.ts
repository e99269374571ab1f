import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { openActivityLog, parseSkillMd, shapeOf, SkillError } from '../../src/skills/index.ts'
import { tempDir } from './helpers.ts'

const DAY = 86_400_000

test('the shape of arguments keeps names and JSON types, never values', () => {
  assert.equal(shapeOf({ branch: 'main', force: true, retries: 3, ratio: 0.5, files: ['a', 'b'], opts: { depth: 1 }, none: null }),
    '{branch:string,files:string[],force:boolean,none:null,opts:{depth:integer},ratio:number,retries:integer}')
  // key order does not matter; mixed arrays list each type once
  assert.equal(shapeOf({ b: 1, a: [1, 'x', 2] }), shapeOf({ a: ['y', 3], b: 7 }))
  // keys that look like data collapse into *
  assert.equal(shapeOf({ 'alice@example.com': 1, 'bob@example.com': 2 }), '{*:integer}')
  assert.equal(shapeOf([]), '[]')
  assert.equal(shapeOf({ a: { b: { c: { d: { e: 1 } } } } }), '{a:{b:{c:{d:object}}}}')
})

test('suggest proposes a skill with a valid draft SKILL.md when a shape repeats, and argument values never enter storage or output', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  let now = Date.parse('2025-03-01T10:00:00Z')
  const log = openActivityLog(join(dir, 'activity.db'), { now: () => now })
  t.after(() => { log.close() })
  const secrets = ['hunter2-very-secret-token', 'prod-db-7.internal', '4471-9981']
  log.record({ kind: 'tool', name: 'deploy_preview', arguments: { branch: secrets[0], host: secrets[1], pin: 4471_9981, dry_run: false } })
  assert.deepEqual(log.suggest(), [], 'once is not a pattern')
  now += 2 * DAY
  log.record({ kind: 'tool', name: 'deploy_preview', arguments: { branch: 'feature/x', host: 'staging', pin: 12, dry_run: true } })
  // another shape of the same tool, and another tool, once each
  log.record({ kind: 'tool', name: 'deploy_preview', arguments: { branch: 'x' } })
  log.record({ kind: 'command', name: 'git', arguments: { args: [secrets[2]] } })

  const suggestions = log.suggest()
  assert.equal(suggestions.length, 1)
  const [s] = suggestions
  assert.equal(s.name, 'deploy_preview')
  assert.equal(s.count, 2)
  assert.equal(s.shape, '{branch:string,dry_run:boolean,host:string,pin:integer}')
  assert.equal(s.skill, 'deploy-preview-skill')
  const front = parseSkillMd(new TextEncoder().encode(s.draft))
  assert.equal(front.name, 'deploy-preview-skill')
  assert.equal(front.version, '0.1.0')
  assert.deepEqual(front.inputs.map((i) => [i.name, i.type]), [['branch', 'string'], ['dry_run', 'boolean'], ['host', 'string'], ['pin', 'integer']])

  // outside the 7-day window the pattern is gone; a custom threshold and window apply
  now += 6 * DAY
  assert.deepEqual(log.suggest(), [])
  assert.equal(log.suggest({ windowMs: 30 * DAY }).length, 1)
  assert.deepEqual(log.suggest({ windowMs: 30 * DAY, minRepeats: 3 }), [])
  assert.throws(() => log.suggest({ minRepeats: 1 }), SkillError)
  assert.throws(() => log.record({ kind: 'command', name: 'git commit -m secret', arguments: {} }), /a name, not a command line/)

  // no value in any output or any byte on disk (database, WAL)
  const output = JSON.stringify(log.suggest({ windowMs: 30 * DAY, minRepeats: 2 }))
  for (const secret of [...secrets, '44719981', 'feature/x', 'staging']) assert.equal(output.includes(secret), false, `${secret} in output`)
  for (const file of await readdir(dir)) {
    const bytes = await readFile(join(dir, file))
    for (const secret of [...secrets, 'feature/x', 'staging']) assert.equal(bytes.includes(Buffer.from(secret)), false, `${secret} in ${file}`)
    assert.equal(bytes.includes(Buffer.from([0x02, 0xaa, 0x5f, 0x6d])), false, `the pin as an integer in ${file}`)
  }
})
