import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openBrain, tempDir, DAY } from './helpers.ts'
import { createBrain } from '../../src/brain/index.ts'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'

test('relations are typed by the ontology; unknown types and predicates list the allowed ones', async (t) => {
  const { brain } = await openBrain(t)
  const r = brain.relate({ subject: { name: 'Alice', type: 'person' }, predicate: 'works_at', object: 'Acme Corp' })
  assert.equal(r.relation.object.type, 'organization') // implied by the predicate's range
  assert.equal(r.relation.author, brain.brainId)
  assert.throws(() => brain.relate({ subject: 'Alice', predicate: 'likes_very_much', object: 'Acme Corp' }),
    (err: Error & { code?: string }) => err.code === 'ERR_UNKNOWN_PREDICATE' && /allowed predicates: .*works_at/.test(err.message))
  assert.throws(() => brain.relate({ subject: { name: 'Zed', type: 'spaceship' }, predicate: 'owns', object: 'Alice' }),
    (err: Error & { code?: string }) => err.code === 'ERR_UNKNOWN_TYPE' && /allowed types: .*person/.test(err.message))
  assert.throws(() => brain.relate({ subject: 'Acme Corp', predicate: 'lives_in', object: 'Paris' }), { code: 'ERR_ONTOLOGY_VIOLATION' })
  assert.throws(() => brain.relate({ subject: 'Nobody Known', predicate: 'related_to', object: 'Alice' }), { code: 'ERR_INVALID_INPUT', message: /give its type/ })
  assert.throws(() => brain.relate({ subject: 'Alice', predicate: 'knows', object: { name: 'Bob', type: 'person' }, validFrom: 'soon' }), { code: 'ERR_INVALID_DATE' })
  assert.equal(brain.stats().relations.total, 1)
})

test('single-valued predicates supersede the previous value; as-of shows the old one', async (t) => {
  const { brain, clock } = await openBrain(t)
  const first = brain.relate({ subject: { name: 'Alice', type: 'person' }, predicate: 'works_at', object: 'Acme', validFrom: '2019-01-01' })
  brain.relate({ subject: 'Alice', predicate: 'knows', object: { name: 'Bob', type: 'person' }, validFrom: '2018-01-01' })
  brain.relate({ subject: 'Alice', predicate: 'knows', object: { name: 'Carol', type: 'person' }, validFrom: '2018-01-01' }) // multi-valued: both stay
  const recordedBefore = new Date(clock.now).toISOString()
  clock.now += DAY
  const second = brain.relate({ subject: 'Alice', predicate: 'works_at', object: 'Globex', validFrom: '2023-01-01' })
  assert.deepEqual(second.superseded, [first.relation.id])
  const now = brain.neighbors('Alice').neighbors.map((n) => n.entity.name).sort()
  assert.deepEqual(now, ['Bob', 'Carol', 'Globex'])
  const in2020 = brain.neighbors('Alice', { asOf: { valid: '2020-06-01' } }).neighbors.map((n) => n.entity.name).sort()
  assert.deepEqual(in2020, ['Acme', 'Bob', 'Carol'])
  const knownBefore = brain.neighbors('Alice', { asOf: { recorded: recordedBefore } }).neighbors.map((n) => n.entity.name).sort()
  assert.deepEqual(knownBefore, ['Acme', 'Bob', 'Carol'])
  // a relation can be forgotten by id
  brain.forget(second.relation.id)
  assert.deepEqual(brain.neighbors('Alice').neighbors.map((n) => n.entity.name).sort(), ['Bob', 'Carol'])
  assert.equal(brain.verify().ok, true)
})

test('path finds the shortest relation paths within the hop bound, in either direction', async (t) => {
  const { brain } = await openBrain(t)
  brain.relate({ subject: { name: 'Alice', type: 'person' }, predicate: 'works_at', object: { name: 'Acme', type: 'organization' } })
  brain.relate({ subject: { name: 'Bob', type: 'person' }, predicate: 'works_at', object: 'Acme' })
  brain.relate({ subject: 'Bob', predicate: 'works_on', object: { name: 'Rocket', type: 'project' } })
  brain.relate({ subject: 'Rocket', predicate: 'depends_on', object: { name: 'Postgres', type: 'technology' } })
  brain.relate({ subject: { name: 'Dana', type: 'person' }, predicate: 'knows', object: 'Alice' })
  brain.relate({ subject: 'Dana', predicate: 'works_on', object: 'Rocket' })
  brain.relate({ subject: { name: 'Eve', type: 'person' }, predicate: 'knows', object: 'Alice' })
  brain.relate({ subject: 'Eve', predicate: 'works_on', object: 'Rocket' })
  const result = brain.path('Alice', 'Postgres', { maxHops: 4 })
  assert.equal(result.paths.length, 2)
  for (const p of result.paths) assert.equal(p.hops, 3)
  const routes = result.paths.map((p) => p.steps.map((s) => `${s.subject} ${s.predicate} ${s.object} (${s.direction})`).join(' / ')).sort()
  assert.deepEqual(routes, [
    'Dana knows Alice (backward) / Dana works_on Rocket (forward) / Rocket depends_on Postgres (forward)',
    'Eve knows Alice (backward) / Eve works_on Rocket (forward) / Rocket depends_on Postgres (forward)'
  ])
  assert.deepEqual(brain.path('Alice', 'Postgres', { maxHops: 2 }).paths, [])
  assert.equal(brain.path('Alice', 'Acme').paths[0].hops, 1)
  assert.throws(() => brain.path('Alice', 'Nobody'), { code: 'ERR_NOT_FOUND' })
  assert.throws(() => brain.path('Alice', 'Acme', { maxHops: 99 }), { code: 'ERR_INVALID_INPUT' })
  const two = brain.neighbors('Alice', { hops: 2 })
  assert.deepEqual(two.neighbors.map((n) => `${n.entity.name}:${n.distance}`).sort(), ['Acme:1', 'Bob:2', 'Dana:1', 'Eve:1', 'Rocket:2'])
  // the 4-hop route through Acme and Bob is longer than the shortest and is not returned
  assert.equal(brain.path('Acme', 'Postgres').paths.length, 1)
  assert.equal(brain.path('Acme', 'Postgres').paths[0].hops, 3)
})

test('alias resolution: exact, then case/diacritic-insensitive, then fuzzy', async (t) => {
  const { brain } = await openBrain(t)
  brain.relate({ subject: { name: 'José Müller', type: 'person' }, predicate: 'works_at', object: { name: 'Zürich Instruments', type: 'organization' } })
  brain.addAlias('José Müller', 'Pepe')
  assert.equal(brain.resolveEntity('Pepe').name, 'José Müller')
  assert.equal(brain.resolveEntity('jose muller').name, 'José Müller')
  assert.equal(brain.resolveEntity('ZURICH INSTRUMENTS').name, 'Zürich Instruments')
  assert.equal(brain.resolveEntity('Zurich Instrumnets').name, 'Zürich Instruments') // fuzzy: transposed letters
  assert.equal(brain.resolveEntity('Jose Muler').name, 'José Müller')
  assert.throws(() => brain.resolveEntity('Completely Different'), { code: 'ERR_NOT_FOUND' })
  // two entities with the same name and different types are ambiguous without a type
  brain.relate({ subject: { name: 'Mercury', type: 'project' }, predicate: 'depends_on', object: { name: 'Mercury', type: 'technology' } })
  assert.throws(() => brain.resolveEntity('Mercury'), { code: 'ERR_AMBIGUOUS_ENTITY' })
  assert.equal(brain.resolveEntity({ name: 'mercury', type: 'technology' }).type, 'technology')
  // relate() reuses entities found by alias instead of creating new ones
  brain.relate({ subject: 'pepe', predicate: 'knows', object: { name: 'Ana', type: 'person' } })
  assert.equal(brain.entities().filter((e) => e.type === 'person').length, 2)
  assert.equal(brain.path('Ana', 'Zurich Instruments').paths[0].hops, 2)
})

test('a custom ontology file replaces the built-in one', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'ontology.json')
  await writeFile(file, JSON.stringify({
    types: ['gene', 'protein', { name: 'enzyme', parent: 'protein' }],
    predicates: [{ name: 'encodes', domain: 'gene', range: 'protein', single: true }, { name: 'binds', domain: 'protein', range: 'protein' }]
  }))
  const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(generateEd25519()), ontology: file })
  await brain.start()
  t.after(async () => { await brain.stop() })
  brain.relate({ subject: { name: 'BRCA1', type: 'gene' }, predicate: 'encodes', object: { name: 'BRCA1 protein', type: 'protein' } })
  brain.relate({ subject: { name: 'Kinase X', type: 'enzyme' }, predicate: 'binds', object: 'BRCA1 protein' }) // enzyme is a protein
  assert.throws(() => brain.relate({ subject: 'BRCA1', predicate: 'works_at', object: 'BRCA1 protein' }), (err: Error & { code?: string }) => err.code === 'ERR_UNKNOWN_PREDICATE' && /encodes, binds/.test(err.message))
  assert.throws(() => createBrain({ dataDir: dir, identity: brain as never, ontology: { types: ['a'], predicates: [{ name: 'p', domain: 'zzz' }] } }), { code: 'ERR_INVALID_INPUT' })
})
