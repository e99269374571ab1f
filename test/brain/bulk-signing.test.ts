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
