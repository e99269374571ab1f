import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import type { RememberInput } from '../../src/brain/index.ts'
import { openBrain } from './helpers.ts'

// Inputs that exercise every branch of a bulk write: keys repeated inside one batch (a version
// must see the one before it), an unchanged re-statement, plain unkeyed memories and an update.
function inputs (): RememberInput[] {
  const out: RememberInput[] = []
  for (let i = 0; i < 150; i++) {
    out.push({ content: `note ${i} about the falcon launch window and vendor ${i % 7}`, kind: 'note', topic: `t${i % 3}` })
    if (i % 10 === 0) out.push({ key: `project.${i % 30}`, content: `project ${i % 30} status is ${i} percent done` })
    if (i % 25 === 0) out.push({ key: `project.${i % 30}`, content: `project ${i % 30} status is ${i} percent done` })
  }
  return out
}

test('a bulk write signed on worker threads writes exactly what signing inline and one at a time write', async (t) => {
  const identity = await identityFromKeyPair(generateEd25519())
  const pooled = await openBrain(t, { identity, signingThreads: 2 })
  const inline = await openBrain(t, { identity, signingThreads: 0 })
  const single = await openBrain(t, { identity, signingThreads: 0 })

  const a = pooled.brain.rememberMany(inputs(), { batchSize: 100 })
  const b = inline.brain.rememberMany(inputs(), { batchSize: 100 })
  const c = inputs().map((input) => single.brain.remember(input))

  assert.deepEqual(a, b)
  assert.deepEqual(a.ids, c.map((r) => r.memory.id))
  assert.ok(a.unchanged > 0, 'the inputs re-state a keyed memory unchanged')
  assert.ok(pooled.brain.history('project.0').length > 1, 'a key got a second version')
  assert.deepEqual([...pooled.brain.exportLines()], [...inline.brain.exportLines()])
  assert.deepEqual([...pooled.brain.exportLines()], [...single.brain.exportLines()])
  assert.equal(pooled.brain.stats().head, inline.brain.stats().head)
  assert.equal(pooled.brain.stats().head, single.brain.stats().head)
  const report = pooled.brain.verify({ signatures: true })
  assert.deepEqual(report.problems, [])
  assert.equal(report.ok, true)
})

test('a brain whose identity cannot hand its key to workers signs on the main thread', async (t) => {
  const real = await identityFromKeyPair(generateEd25519())
  // an identity backed by a signer that does not expose an Ed25519 key (a hardware key, say)
  const opaque = { ...real, libp2pPrivateKey: { ...real.libp2pPrivateKey, type: 'secp256k1' } } as unknown as typeof real
  const { brain } = await openBrain(t, { identity: opaque, signingThreads: 2 })
  const result = brain.rememberMany(inputs(), { batchSize: 100 })
  assert.ok(result.created > 100)
  assert.equal(brain.verify({ signatures: true }).ok, true)
})

test('a large bulk write flags the same near-duplicates as writing one at a time (band filter)', async (t) => {
  const identity = await identityFromKeyPair(generateEd25519())
  const bulk = await openBrain(t, { identity, durability: 'normal' })
  const single = await openBrain(t, { identity, durability: 'normal', signingThreads: 0 })
  // distinct texts (made-up words), so each has at most a few near-duplicate candidates
  let state = 7
  const word = (): string => {
    state = (state * 1103515245 + 12345) % 2147483648
    return 'w' + (state % 100000).toString(36)
  }
  const sentence = (): string => Array.from({ length: 12 }, word).join(' ')
  // a brain with memories already (the filter is loaded from the table) and a large bulk write
  const before: RememberInput[] = Array.from({ length: 300 }, () => ({ content: sentence() }))
  const many: RememberInput[] = []
  for (let i = 0; i < 1100; i++) {
    many.push({ content: sentence() })
    // restates a memory from before the bulk write, and one from earlier in this bulk write
    if (i % 100 === 0) many.push({ content: before[i % 300].content + ' again' })
    if (i % 100 === 50) many.push({ content: many[many.length - 1].content + ' today' })
  }
  bulk.brain.rememberMany(before)
  before.forEach((input) => single.brain.remember(input))
  const a = bulk.brain.rememberMany(many, { batchSize: 500 })
  const b = many.map((input) => single.brain.remember(input))
  assert.deepEqual(a.ids, b.map((r) => r.memory.id))
  const flagged = b.filter((r) => r.memory.duplicateOf !== null)
  assert.ok(flagged.length >= 20, `near-duplicates flagged one at a time: ${flagged.length}`)
  for (const id of a.ids) assert.equal(bulk.brain.get(id).duplicateOf, single.brain.get(id).duplicateOf, id)
})

test('a bulk write that fails part-way leaves nothing behind, in the index either', async (t) => {
  const { brain } = await openBrain(t, { durability: 'normal' })
  brain.remember({ content: 'committed before: the osprey nests by the river' })
  // the repeated key makes the second version wait for the first to be stored; it then fails
  assert.throws(() => brain.rememberMany([
    { key: 'k', content: 'kappa first version' },
    { content: 'alpha zebra one' },
    { key: 'k', content: 'kappa second version', validTo: '2001-01-01' }
  ]), /validTo must be after validFrom/)
  brain.remember({ content: 'delta walrus three' })
  assert.deepEqual(brain.recall('kappa').hits, [])
  assert.deepEqual(brain.recall('zebra').hits, [])
  assert.deepEqual(brain.recall('walrus').hits.map((h) => h.content), ['delta walrus three'])
  assert.deepEqual(brain.recall('osprey').hits.map((h) => h.content), ['committed before: the osprey nests by the river'])
  assert.equal(brain.stats().memories.total, 2)
  assert.equal(brain.verify().ok, true)
})
