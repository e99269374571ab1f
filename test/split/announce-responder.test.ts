import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import { createCapacityResponder, modelServersKey, spanServersKey, verifyCapacityRecord, type CapacityFigures } from '../../src/split/index.ts'

const model = { configSha256: '11'.repeat(32), weightsSha256: '22'.repeat(32) }
const figures: CapacityFigures = { start: 2, end: 5, msPerLayer: 1.5, tokensPerSecond: 1000 / 4.5, maxSessions: 8, freeSessions: 6, maxLength: 1024, freeMemoryBytes: 5e9, spanWeightBytes: 3e8, kvBytesPerPosition: 3 * 2048 }

// recordFor never touches the network; start/stop (the protocol handler) are not called here
const noLibp2p = null as unknown as Libp2p

test('the responder signs current figures, withdraws, keeps withdrawn records for the retention, and filters by acceptFrom', async () => {
  const identity = await identityFromKeyPair(generateEd25519())
  const other = await identityFromKeyPair(generateEd25519())
  let now = 1_000_000
  let free = 6
  const responder = createCapacityResponder({ libp2p: noLibp2p, identity, now: () => now, recordTtlMs: 60_000, withdrawnRetentionMs: 3_600_000 })
  assert.equal(responder.recordFor(model), null)
  const { withdraw } = responder.offer({ model, describe: () => ({ ...figures, freeSessions: free }) })

  const first = verifyCapacityRecord(responder.recordFor(model) as Uint8Array, { peer: identity.peerId, model, now })
  assert.deepEqual([first.start, first.end, first.freeSessions, first.issuedAtMs, first.expiresAtMs, first.withdrawn, first.teamOnly], [2, 5, 6, now, now + 60_000, false, false])
  // figures are read at each request
  free = 2
  now += 1000
  assert.equal(verifyCapacityRecord(responder.recordFor(model) as Uint8Array, { peer: identity.peerId, model, now }).freeSessions, 2)
  // a record is only valid for its TTL (plus the clock-skew allowance)
  const issued = responder.recordFor(model) as Uint8Array
  assert.throws(() => verifyCapacityRecord(issued, { peer: identity.peerId, model, now: now + 60_000 + 61_000 }), /expired/)

  withdraw()
  const gone = verifyCapacityRecord(responder.recordFor(model) as Uint8Array, { peer: identity.peerId, model, now })
  assert.deepEqual([gone.withdrawn, gone.freeSessions, gone.start, gone.end], [true, 0, 2, 5])
  now += 3_600_000 - 1
  assert.equal(verifyCapacityRecord(responder.recordFor(model) as Uint8Array, { peer: identity.peerId, model, now }).withdrawn, true)
  now += 2
  assert.equal(responder.recordFor(model), null, 'forgotten after the retention')

  // team-only: the record goes to accepted peers only, and says so
  const member = other.peerId
  const stranger = (await identityFromKeyPair(generateEd25519())).peerId
  responder.offer({ model, describe: () => figures, acceptFrom: (peer: PeerId) => peer.equals(member) })
  assert.equal(responder.recordFor(model, stranger), null)
  assert.equal(verifyCapacityRecord(responder.recordFor(model, member) as Uint8Array, { peer: identity.peerId, model, now }).teamOnly, true)
})

test('DHT keys: one per model, one per span, distinct and stable', () => {
  assert.equal(modelServersKey(model).toString(), modelServersKey({ ...model }).toString())
  assert.notEqual(modelServersKey(model).toString(), modelServersKey({ ...model, weightsSha256: '33'.repeat(32) }).toString())
  assert.notEqual(spanServersKey(model, { start: 1, end: 3 }).toString(), spanServersKey(model, { start: 1, end: 4 }).toString())
  assert.notEqual(spanServersKey(model, { start: 1, end: 3 }).toString(), modelServersKey(model).toString())
  // CIDv1, raw codec, sha2-256
  const cid = spanServersKey(model, { start: 1, end: 3 })
  assert.deepEqual([cid.version, cid.code, cid.multihash.code, cid.multihash.digest.byteLength], [1, 0x55, 0x12, 32])
})
