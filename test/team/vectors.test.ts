import { test } from 'node:test'
import assert from 'node:assert/strict'
import { identityFromKeyPair } from '../../src/identity/index.ts'
import { publicKeyFromSeed } from '../../src/identity/ed25519.ts'
import { createShard, decodeShard, encodeCanonicalJson } from '../../src/team/index.ts'

// The shard test vector of docs/protocols.md#shards
const VECTOR = {
  content: '0801122011111111111111111111111111111111111111111111111111111111111111111a2079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad04966420042a637b22726561736f6e223a2277726f6e672064617465222c22746172676574223a2232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232227d30013a2033333333333333333333333333333333333333333333333333333333333333334080d095ffbc314802',
  id: '2c78fe36920675d6ffdade38ed2859174aeb4500a436c30ac3044d44d257210f',
  signature: '99fd4ba4a9c1560b93ebe89126a40842727020522d194323415ef5a0fff52db1ba0052474d5c5b9188736d449c73ddaa7ea3eba592a812726e829f7cd9366405'
}

test('shard canonical bytes, id and signature match the documented vector', async () => {
  const seed = new Uint8Array(32).map((_, i) => i + 1)
  const identity = await identityFromKeyPair({ seed, publicKey: publicKeyFromSeed(seed) })
  const shard = createShard(identity, {
    teamId: '11'.repeat(32),
    kind: 'dispute',
    body: encodeCanonicalJson({ target: '22'.repeat(32), reason: 'wrong date' }),
    visibility: 'team',
    supersedes: ['33'.repeat(32)],
    hlc: { wallMs: 1700000000000, counter: 2 }
  })
  assert.equal(Buffer.from(shard.content).toString('hex'), VECTOR.content)
  assert.equal(shard.id, VECTOR.id)
  assert.equal(Buffer.from(shard.signature).toString('hex'), VECTOR.signature)
  const decoded = decodeShard(shard.bytes)
  assert.equal(decoded.id, VECTOR.id)
  assert.equal(decoded.author, identity.brainId)
  assert.deepEqual(decoded.hlc, { wallMs: 1700000000000, counter: 2 })
})
