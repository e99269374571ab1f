import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Identity } from '../../src/identity/index.ts'
import type { LocalModel } from '../../src/inference/index.ts'
import type { Permagent } from '../../src/permagent.ts'
import {
  MigrationWire, UsxfEncoder, WINDOW_BYTES, crc32c, extractKv, kvStateInput, type UsxfQuantization, type UsxfStateInput
} from '../../src/usxf/index.ts'
import { waitFor } from '../../src/util/index.ts'
import { generate, migrationWorld, promptIds, sessionDigest, type MigrationWorld } from './fixtures.ts'
import { collect, otherIdentity } from './helpers.ts'

// A source that misbehaves on purpose: it speaks the protocol itself and sends streams that were
// cut short, damaged in transit, tampered with, or signed by someone else. The target (node 1, a
// 50-position context) must refuse each with its specific error and keep its state exactly as it was.
let world: MigrationWorld
let source: Permagent
let target: Permagent
let model: LocalModel
let residentDigest: string

before(async () => {
  world = await migrationWorld([128, 50])
  source = world.swarm.nodes[0]
  target = world.swarm.nodes[1]
  model = world.nodes[0].model
  // the target already hosts a session, which no refused migration may touch
  const resident = world.nodes[1].model.newSession()
  await generate(world.nodes[1].model, resident, promptIds(12, 20), 3)
  world.nodes[1].service.sessions.add('resident', world.nodes[1].model, resident)
  residentDigest = sessionDigest(resident)
})

after(async () => {
  await world?.close()
})

async function sessionState (positions: number): Promise<UsxfStateInput> {
  const session = model.newSession()
  await session.forward(promptIds(positions, 21))
  return kvStateInput(model.manifest, extractKv(session.caches))
}

async function records (input: UsxfStateInput, signer: Identity = source.identity, quantization: UsxfQuantization = 'none'): Promise<Uint8Array[]> {
  return await collect(new UsxfEncoder(input, { signer, quantization, blockTokens: 8, chunkBytes: 512 }).records())
}

function reseal (record: Uint8Array): Uint8Array {
  new DataView(record.buffer, record.byteOffset).setUint32(record.byteLength - 4, crc32c(record.subarray(0, record.byteLength - 4)), true)
  return record
}

interface RawOptions {
  sessionId: string
  seqLen: number
  records: Uint8Array[]
  /** Close our end after this many records instead of waiting for the attach report. */
  cutAfter?: number
  configSha256?: string
}

/** Plays a source by hand; returns the error code the target replied with, or null if it attached. */
async function rawMigration (options: RawOptions): Promise<string | null> {
  const wire = await MigrationWire.open(source.mesh.libp2p, target.mesh.peerId)
  const read = { timeoutMs: 10_000 }
  try {
    await wire.sendControl({
      offer: {
        migrationId: new Uint8Array(16),
        sessionId: options.sessionId,
        model: { configSha256: Buffer.from(options.configSha256 ?? model.manifest.configSha256, 'hex'), weightsSha256: Buffer.from(model.manifest.weightsSha256, 'hex') },
        layerStart: 0,
        layerEnd: model.manifest.spec.numLayers,
        seqLen: options.seqLen,
        rawBytes: BigInt(options.seqLen * 1024),
        quantizations: [0],
        fidelityTokens: 2
      }
    })
    await wire.expect('capabilities', read)
    await wire.sendControl({ begin: { quantization: 0, hasPendingToken: false, pendingToken: 0, probeToken: 5, windowBytes: WINDOW_BYTES } })
    const count = options.cutAfter ?? options.records.length
    for (const record of options.records.slice(0, count)) {
      const framed = new Uint8Array(record.byteLength + 1)
      framed.set(record, 1)
      await wire.sendRecord(framed)
    }
    if (options.cutAfter !== undefined) await wire.close()
    await wire.expect('attached', read, ['credit'])
    await wire.sendControl({ commit: { commit: false, reason: 'test' } })
    return null
  } catch (err) {
    return (err as { code?: string }).code ?? 'no code'
  } finally {
    wire.abort(new Error('done'))
  }
}

async function assertRefused (sessionId: string, code: string, options: Omit<RawOptions, 'sessionId'>): Promise<void> {
  const sizeBefore = world.nodes[1].service.sessions.size
  assert.equal(await rawMigration({ sessionId, ...options }), code, sessionId)
  const event = await waitFor(() => world.nodes[1].events.find((e) => e.sessionId === sessionId), { what: `the target's verdict on ${sessionId}` })
  assert.equal(event.outcome, 'refused')
  assert.equal(event.code, code)
  // two-phase abort: nothing was attached, the resident session is untouched
  assert.equal(world.nodes[1].service.sessions.size, sizeBefore)
  assert.equal(world.nodes[1].service.sessions.has(sessionId), false)
  assert.equal(sessionDigest(world.nodes[1].service.sessions.require('resident').session), residentDigest)
}

test('the honest stream attaches (the baseline the corruptions below depart from)', async () => {
  const stream = await records(await sessionState(30))
  assert.equal(await rawMigration({ sessionId: 'baseline', seqLen: 30, records: stream }), null)
  const event = await waitFor(() => world.nodes[1].events.find((e) => e.sessionId === 'baseline'))
  assert.equal(event.outcome, 'aborted', 'the raw source withdrew at commit')
  assert.equal(world.nodes[1].service.sessions.has('baseline'), false)
})

test('a truncated stream is refused as truncated', async () => {
  const stream = await records(await sessionState(30))
  await assertRefused('cut-mid', 'ERR_USXF_TRUNCATED', { seqLen: 30, records: stream, cutAfter: Math.floor(stream.length / 2) })
  await assertRefused('cut-before-trailer', 'ERR_USXF_TRUNCATED', { seqLen: 30, records: stream, cutAfter: stream.length - 1 })
})

test('a flipped bit in any chunk is refused by its checksum', async () => {
  const stream = await records(await sessionState(30))
  for (const index of [1, Math.floor(stream.length / 2), stream.length - 2]) {
    const damaged = stream.map((r) => r.slice())
    damaged[index][40] ^= 0x08
    await assertRefused(`flip-${index}`, 'ERR_USXF_CHECKSUM', { seqLen: 30, records: damaged })
  }
})

test('a chunk altered with a recomputed CRC is refused by its block hash', async () => {
  const damaged = (await records(await sessionState(30))).map((r) => r.slice())
  damaged[3][30] ^= 0x01
  reseal(damaged[3])
  await assertRefused('block-hash', 'ERR_USXF_BLOCK_HASH', { seqLen: 30, records: damaged })
})

test('a bad signature, or a stream signed by another key than the peer\'s, is refused', async () => {
  const damaged = (await records(await sessionState(30))).map((r) => r.slice())
  const trailer = damaged[damaged.length - 1]
  trailer[trailer.length - 8] ^= 0x01
  reseal(trailer)
  await assertRefused('bad-signature', 'ERR_USXF_SIGNATURE', { seqLen: 30, records: damaged })
  const foreign = await records(await sessionState(30), await otherIdentity())
  await assertRefused('other-signer', 'ERR_USXF_PRODUCER', { seqLen: 30, records: foreign })
})

test('a state of another model is refused, whether the offer or the signed header says so', async () => {
  const stream = await records(await sessionState(30))
  await assertRefused('other-model-offer', 'ERR_USXF_MODEL_MISMATCH', { seqLen: 30, records: stream, configSha256: 'ab'.repeat(32) })
  const input = await sessionState(30)
  const foreign = await records({ ...input, model: { ...input.model, weightsSha256: 'cd'.repeat(32) } })
  await assertRefused('other-model-header', 'ERR_USXF_MODEL_MISMATCH', { seqLen: 30, records: foreign })
})

test('a state whose shape does not fit the model is refused', async () => {
  const input = await sessionState(30)
  // the same bytes presented as 2 KV heads of twice the size: the right model, the wrong shape
  const reshaped: UsxfStateInput = { ...input, numKvHeads: 2, headDim: input.headDim * 2, planes: input.planes.filter((_, i) => i % 2 === 0).map((p, i) => { const out = new Float32Array(p.length * 2); out.set(p); out.set(input.planes[i * 2 + 1], p.length); return out }) }
  await assertRefused('shape', 'ERR_USXF_SHAPE_MISMATCH', { seqLen: 30, records: await records(reshaped) })
})

test('a sequence beyond the target\'s context is refused, at the offer or at the header', async () => {
  const long = await records(await sessionState(60))
  await assertRefused('long-offer', 'ERR_USXF_CONTEXT_EXCEEDED', { seqLen: 60, records: long })
  // an offer that understates the length does not get the state in either
  await assertRefused('long-header', 'ERR_USXF_CONTEXT_EXCEEDED', { seqLen: 30, records: long })
})

test('after every refusal the same session id still migrates cleanly', async () => {
  const session = model.newSession()
  const tokens = await generate(model, session, promptIds(30, 22), 3)
  world.nodes[0].service.sessions.add('cut-mid', model, session, { pendingToken: tokens[2] })
  const result = await world.nodes[0].service.migrate('cut-mid', target.mesh.peerId, { mode: 'always', fidelityTokens: 8 })
  assert.equal(result.fidelity?.verdict, 'exact')
  assert.ok(world.nodes[1].service.sessions.has('cut-mid'))
  assert.equal(sessionDigest(world.nodes[1].service.sessions.require('resident').session), residentDigest)
})
