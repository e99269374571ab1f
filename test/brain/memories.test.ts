import { test } from 'node:test'
import assert from 'node:assert/strict'
import { openBrain, DAY } from './helpers.ts'

test('an update supersedes the previous version; history keeps both', async (t) => {
  const { brain, clock } = await openBrain(t)
  const first = brain.remember({ key: 'alice.city', content: 'Alice lives in Paris', kind: 'fact', validFrom: '2020-01-01' })
  clock.now += DAY
  const second = brain.remember({ key: 'alice.city', content: 'Alice lives in Berlin now', kind: 'fact', validFrom: '2023-06-01' })
  assert.equal(second.memory.version, 2)
  assert.equal(second.memory.supersedes, first.memory.id)
  const history = brain.history('alice.city')
  assert.deepEqual(history.map((m) => m.version), [1, 2])
  assert.equal(history[0].supersededBy, second.memory.id)
  assert.equal(history[0].validEnd, '2023-06-01T00:00:00.000Z')
  // recall sees only the current version
  const hits = brain.recall('where does alice live').hits
  assert.deepEqual(hits.map((h) => h.id), [second.memory.id])
  assert.equal(hits[0].version, 2)
  assert.equal(hits[0].signatureValid, true)
  assert.equal(hits[0].author, brain.brainId)
})

test('remembering the same thing under a key twice writes nothing new', async (t) => {
  const { brain } = await openBrain(t)
  const a = brain.remember({ key: 'k', content: 'same text' })
  const b = brain.remember({ key: 'k', content: 'same text' })
  assert.equal(b.created, false)
  assert.equal(a.memory.id, b.memory.id)
  assert.equal(brain.stats().memories.total, 1)
})

test('as-of on the recorded axis shows what the brain knew then', async (t) => {
  const { brain, clock } = await openBrain(t)
  const t0 = clock.now
  brain.remember({ key: 'project.status', content: 'Project Falcon status is green' })
  clock.now = t0 + 10 * DAY
  brain.remember({ key: 'project.status', content: 'Project Falcon status is red, blocked on vendor' })
  clock.now = t0 + 20 * DAY
  brain.forget('project.status')
  const at = (ms: number): string[] => brain.recall('falcon status', { asOf: { recorded: new Date(ms).toISOString() } }).hits.map((h) => h.content)
  assert.deepEqual(at(t0 - DAY), [])
  assert.deepEqual(at(t0 + DAY), ['Project Falcon status is green'])
  assert.deepEqual(at(t0 + 15 * DAY), ['Project Falcon status is red, blocked on vendor'])
  assert.deepEqual(at(t0 + 25 * DAY), [])
  assert.deepEqual(brain.recall('falcon status').hits, [])
})

test('as-of on the valid axis shows what was true then, by what the brain knows now', async (t) => {
  const { brain, clock } = await openBrain(t)
  brain.remember({ key: 'ceo', content: 'The CEO of Initech is Bill Lumbergh', validFrom: '2019-01-01' })
  clock.now += DAY
  brain.remember({ key: 'ceo', content: 'The CEO of Initech is Peter Gibbons', validFrom: '2022-03-01' })
  const at = (valid: string): string[] => brain.recall('CEO Initech', { asOf: { valid } }).hits.map((h) => h.content)
  assert.deepEqual(at('2018-06-01'), [])
  assert.deepEqual(at('2020-06-01'), ['The CEO of Initech is Bill Lumbergh'])
  assert.deepEqual(at('2023-06-01'), ['The CEO of Initech is Peter Gibbons'])
  // both axes: at recorded time before the update the brain believed Bill was still CEO in 2023
  const before = Date.parse('2024-01-01T00:00:00Z') + 1000
  assert.deepEqual(brain.recall('CEO Initech', { asOf: { valid: '2023-06-01', recorded: new Date(before).toISOString() } }).hits.map((h) => h.content), ['The CEO of Initech is Bill Lumbergh'])
  // a memory with an explicit end of validity
  brain.remember({ content: 'Initech office was in Austin', validFrom: '2010-01-01', validTo: '2015-01-01' })
  assert.equal(brain.recall('Initech office Austin', { asOf: { valid: '2012-01-01' } }).hits.length, 1)
  assert.equal(brain.recall('Initech office Austin', { asOf: { valid: '2016-01-01' } }).hits.length, 0)
})

test('forgetting one version by id leaves the others; a retracted key can be remembered again', async (t) => {
  const { brain } = await openBrain(t)
  const a = brain.remember({ content: 'the wifi password is hunter2' })
  const b = brain.remember({ content: 'the office door code is 4711' })
  const [retraction] = brain.forget(a.memory.id, 'leaked')
  assert.equal(retraction.target, a.memory.id)
  assert.equal(retraction.reason, 'leaked')
  assert.deepEqual(brain.recall('wifi password').hits, [])
  assert.equal(brain.recall('door code').hits[0].id, b.memory.id)
  assert.ok(brain.get(a.memory.id).retractedAt !== null)
  // forgetting twice returns the same retraction
  assert.equal(brain.forget(a.memory.id)[0].id, retraction.id)
  brain.remember({ key: 'door', content: 'door code 1234' })
  brain.forget('door')
  const again = brain.remember({ key: 'door', content: 'door code 9999' })
  assert.equal(again.memory.version, 2)
  assert.equal(again.memory.supersedes, null)
  assert.equal(brain.recall('door code 9999').hits[0].id, again.memory.id)
  assert.throws(() => brain.forget('no-such-key'), { code: 'ERR_NOT_FOUND' })
})

test('visibility: default private, recall filters by a ceiling', async (t) => {
  const { brain } = await openBrain(t)
  const levels = ['private', 'team', 'org', 'public'] as const
  for (const visibility of levels) brain.remember({ content: `roadmap note for the ${visibility} audience about kiwi`, visibility })
  assert.equal(brain.remember({ content: 'kiwi default' }).memory.visibility, 'private')
  const seen = (visibility?: typeof levels[number]): string[] => brain.recall('roadmap kiwi', { visibility, limit: 10 }).hits.map((h) => h.visibility).sort()
  assert.deepEqual(seen('public'), ['public'])
  assert.deepEqual(seen('org'), ['org', 'public'])
  assert.deepEqual(seen('team'), ['org', 'public', 'team'])
  assert.deepEqual(seen(undefined).length, 5)
  assert.throws(() => brain.remember({ content: 'x', visibility: 'secret' as never }), (err: Error & { code?: string }) => err.code === 'ERR_INVALID_INPUT' && /private, team, org, public/.test(err.message))
})

test('recall filters by kind, topic and author and ranks by relevance', async (t) => {
  const { brain } = await openBrain(t)
  brain.remember({ content: 'We decided to use Postgres for the billing service', kind: 'decision', topic: 'billing' })
  brain.remember({ content: 'Postgres backups run every night at 2am', kind: 'fact', topic: 'ops' })
  brain.remember({ content: 'The billing service sends invoices on the first of the month', kind: 'fact', topic: 'billing' })
  assert.deepEqual(brain.recall('postgres', { kind: 'decision' }).hits.map((h) => h.kind), ['decision'])
  assert.deepEqual(brain.recall('postgres billing', { topic: 'ops' }).hits.map((h) => h.topic), ['ops'])
  assert.equal(brain.recall('postgres', { author: 'f'.repeat(64) }).hits.length, 0)
  const top = brain.recall('which database did we choose for billing').hits[0]
  assert.match(top.content, /decided to use Postgres/)
})

test('queries with FTS operators, quotes and junk never raise a syntax error', async (t) => {
  const { brain } = await openBrain(t)
  brain.remember({ content: 'the NEAR term and OR clause are plain words here "quoted" (parens)' })
  const nasty = ['"', '""', "'", 'AND', 'OR OR OR', 'NOT', 'a AND', '(', ')', '*', 'NEAR(a b)', 'col:term', 'term*', '^start',
    '"unbalanced quote', "it's", '-minus', '+plus', '{x y}', 'quoted" (parens', '\u0000', '💥', '   ', 'near/3', 'x'.repeat(1000)]
  for (const query of nasty) {
    const result = brain.recall(query)
    assert.ok(Array.isArray(result.hits), query)
  }
  assert.ok(brain.recall('NEAR OR "quoted').hits.length > 0)
})

test('limits and validation: typed errors and nothing written', async (t) => {
  const { brain } = await openBrain(t, { limits: { contentBytes: 1024 } })
  const before = brain.stats().logEntries
  assert.throws(() => brain.remember({ content: '' }), { code: 'ERR_INVALID_INPUT', message: /empty/ })
  assert.throws(() => brain.remember({ content: '   \n' }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => brain.remember({ content: 'é'.repeat(600) }), { code: 'ERR_TOO_LARGE', message: /1200 bytes; the limit is 1024/ })
  assert.throws(() => brain.remember({ content: new Uint8Array([0x68, 0xff, 0xfe]) as never }), { code: 'ERR_INVALID_INPUT', message: /UTF-8/ })
  assert.throws(() => brain.remember({ content: 'lone \ud800 surrogate' }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => brain.remember({ content: 'x', kind: 'Not A Kind' }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => brain.remember({ content: 'x', confidence: 2 }), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => brain.remember({ content: 'x', validFrom: 'yesterday-ish' }), { code: 'ERR_INVALID_DATE' })
  assert.throws(() => brain.remember({ content: 'x', validFrom: '2024-02-31' }), { code: 'ERR_INVALID_DATE' })
  assert.throws(() => brain.recall('x', { asOf: { valid: 'not a date' } }), { code: 'ERR_INVALID_DATE' })
  assert.throws(() => brain.recall('x', { asOf: { recorded: '2024-13-01' } }), { code: 'ERR_INVALID_DATE' })
  assert.throws(() => brain.recall('x', { limit: 0 }), { code: 'ERR_INVALID_INPUT' })
  // a bulk write with one bad input writes none of it
  assert.throws(() => brain.rememberMany([{ content: 'fine' }, { content: '' }]), { code: 'ERR_INVALID_INPUT' })
  assert.equal(brain.stats().logEntries, before)
  // bytes input that is valid UTF-8 is accepted
  assert.equal(brain.remember({ content: new TextEncoder().encode('bytes é ok') as never }).memory.content, 'bytes é ok')
})

test('near-duplicates are flagged on ingest', async (t) => {
  const { brain } = await openBrain(t)
  const original = brain.remember({ content: 'The quarterly budget review moved to Thursday afternoon in the large meeting room' })
  const near = brain.remember({ content: 'the quarterly budget review moved to thursday afternoon, in the large meeting room!' })
  const other = brain.remember({ content: 'Marketing wants the new logo in blue and orange' })
  assert.equal(near.nearDuplicate?.id, original.memory.id)
  assert.equal(near.memory.duplicateOf, original.memory.id)
  assert.equal(other.nearDuplicate, null)
})

test('bulk ingest commits in batches and reports each', async (t) => {
  const { brain } = await openBrain(t)
  const acknowledged: number[] = []
  const result = brain.rememberMany(Array.from({ length: 250 }, (_, i) => ({ content: `bulk memory number ${i} about topic ${i % 7}` })), { batchSize: 100, onBatch: (n) => acknowledged.push(n) })
  assert.equal(result.created, 250)
  assert.deepEqual(acknowledged, [100, 200, 250])
  assert.equal(brain.verify().ok, true)
})

test('near-duplicates are caught within one bulk batch, before the index is written', async (t) => {
  const { brain } = await openBrain(t)
  const result = brain.rememberMany([
    { content: 'The vendor contract for the analytics platform renews on the first of March every year' },
    { content: 'Lunch order: two veggie burritos and a large horchata' },
    { content: 'the vendor contract for the analytics platform renews on the first of March, every year' }
  ])
  const third = brain.get(result.ids[2])
  assert.equal(third.duplicateOf, result.ids[0])
  // recall returns one member of a near-duplicate group
  const hits = brain.recall('vendor contract analytics platform renewal').hits
  assert.equal(hits.filter((h) => h.id === result.ids[0] || h.id === result.ids[2]).length, 1)
})

test('expand: a feedback query finds memories that share the best hit\'s rare words, not the question\'s', async (t) => {
  const { brain } = await openBrain(t)
  const adopted = brain.remember({ content: 'We adopted a beagle from the shelter and named him Pixel' }).memory
  const later = brain.remember({ content: 'Pixel chewed through my running shoes again last night' }).memory
  brain.remember({ content: 'The shelter downtown needs volunteers on weekends' })
  const plain = brain.recall('what is the name of the dog we adopted').hits.map((h) => h.id)
  assert.equal(plain[0], adopted.id)
  assert.ok(!plain.includes(later.id))
  const expanded = brain.recall('what is the name of the dog we adopted', { expand: true }).hits.map((h) => h.id)
  assert.equal(expanded[0], adopted.id)
  assert.ok(expanded.includes(later.id))
})
