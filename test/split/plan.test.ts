import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { importModel, parseModelConfig, synthConfig, type ModelSpec } from '../../src/model/index.ts'
import {
  clientExtraBytes, describeLivePool, kvBytesPerPosition, layerWeightBytes, planPool, specWeightBytes,
  type CapacityInfo, type ServerInfo
} from '../../src/split/index.ts'
import { tempDir, tinyCheckpoint } from '../model/fixtures.ts'

const GB = 1e9
const spec70b: ModelSpec = parseModelConfig(JSON.stringify(synthConfig({ shape: 'llama-70b' })))

test('specWeightBytes matches what model import stores, byte for byte, in every format', async () => {
  const dir = await tempDir('permagent-plan-')
  try {
    const ckpt = await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: 4 })
    for (const format of [{ dtype: 'f32', quant: 'none' }, { dtype: 'f16', quant: 'none' }, { dtype: 'f32', quant: 'int8' }, { dtype: 'f16', quant: 'int4' }] as const) {
      const manifest = await importModel(join(dir.path, 'data'), { source: ckpt, name: `tiny-${format.dtype}-${format.quant}`, ...format })
      const computed = specWeightBytes(manifest.spec, format)
      assert.deepEqual(computed.layers, layerWeightBytes(manifest), `${format.dtype}/${format.quant} layers`)
      assert.equal(computed.embed + computed.head, clientExtraBytes(manifest), `${format.dtype}/${format.quant} embeddings and head`)
    }
  } finally {
    await dir.cleanup()
  }
})

test('a 70B at int4 over four 16 GB machines: fits, the other three full and the rest beside the client on machine 0', () => {
  const plan = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'int4' })
  // int4 with block 32: 4 bits + an f32 scale and a 4-bit zero point per 32 values = 5.125 bits per weight
  const params = 8192 * 8192 * 2 + 8192 * 1024 * 2 + 3 * 8192 * 28672
  assert.equal(plan.layerBytes, params * 5.125 / 8 + 2 * 8192 * 4)
  assert.equal(plan.kvBytesPerLayerPosition, 2 * 8 * 128 * 4)
  assert.equal(plan.machines[0].role, 'client')
  // 85% of 16 GB usable; a layer is 548 MB of weights and 17 MB of KV (one session of 2048 positions): 24 a machine
  assert.deepEqual(plan.machines.map((m) => m.span), [{ start: 73, end: 79 }, { start: 1, end: 25 }, { start: 25, end: 49 }, { start: 49, end: 73 }])
  assert.ok(plan.clientBytes > 3 * GB && plan.clientBytes < 5 * GB, `${plan.clientBytes}`)
  assert.deepEqual(plan.uncovered, [])
  assert.equal(plan.fits, true)
  assert.ok(plan.machines.every((m) => m.freeBytes >= 0))
  assert.equal(plan.projected, null)
  assert.ok(plan.notes.some((n) => /no tokens\/s projection/.test(n)))
  assert.ok(plan.modelBytes > 40 * GB && plan.modelBytes < 50 * GB, `${plan.modelBytes}`)
})

test('the same model does not fit at int8 or f16, and says which layers are left', () => {
  const int8 = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'int8' })
  assert.equal(int8.fits, false)
  assert.equal(int8.uncovered.length, 1)
  assert.equal(int8.uncovered[0].end, 79)
  const f16 = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'none' })
  assert.ok(f16.uncovered[0].start < int8.uncovered[0].start)
})

test('more sessions and longer contexts cost KV memory on every server; client: separate uses every machine', () => {
  const one = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'int4', client: 'separate' })
  assert.equal(one.machines.every((m) => m.role === 'server'), true)
  assert.deepEqual(one.machines[0].span?.start, 1)
  const many = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'int4', sessions: 16, maxLength: 4096 })
  assert.equal(many.fits, false)
  assert.ok((many.machines[1].span?.end ?? 0) < 25)
})

test('a projection only from given figures, marked estimated', () => {
  const plan = planPool(spec70b, [16 * GB, 16 * GB, 16 * GB, 16 * GB], { dtype: 'f16', quant: 'int4', msPerLayer: 2, rttMs: 5 })
  assert.deepEqual(plan.projected, { msPerToken: 80 * 2 + 4 * 5, tokensPerSecond: 1000 / 180, hops: 4, estimated: true })
  assert.throws(() => planPool(spec70b, [], { dtype: 'f16', quant: 'int4' }), /machines/)
  assert.throws(() => planPool(spec70b, [16 * GB], { dtype: 'f16', quant: 'int4' }), /at least two machines/)
})

const fakePeer = (name: string): PeerId => ({ toString: () => name, equals: (o: PeerId) => o.toString() === name }) as unknown as PeerId

function record (name: string, start: number, end: number, over: Partial<CapacityInfo> = {}): CapacityInfo {
  return { peer: fakePeer(name), model: { configSha256: 'a', weightsSha256: 'b' }, start, end, msPerLayer: 2, tokensPerSecond: 1000 / (2 * (end - start)), maxSessions: 4, freeSessions: 4, maxLength: 2048, freeMemoryBytes: 1000, spanWeightBytes: 0, kvBytesPerPosition: 0, version: '0.1.0', issuedAtMs: 0, expiresAtMs: 1, withdrawn: false, teamOnly: false, ...over }
}

function probed (r: CapacityInfo, rttMs: number): ServerInfo {
  return { peer: r.peer, start: r.start, end: r.end, maxLength: r.maxLength, maxStepRows: r.maxLength, freeSessions: r.freeSessions, msPerLayer: r.msPerLayer, rttMs }
}

const facts = { numLayers: 8, layerBytes: [10, 20, 20, 20, 20, 20, 20, 30], kvBytesPerLayerPosition: 4, clientExtraBytes: 100 }

test('a live pool: coverage, memory per span, route and projection from measured figures', () => {
  const a = record('A', 1, 4)
  const b = record('B', 4, 7, { msPerLayer: 3 })
  const c = record('C', 4, 7, { msPerLayer: 1, withdrawn: true })
  const plan = describeLivePool(facts, [a, b, c], [probed(a, 5), probed(b, 7)])
  assert.deepEqual(plan.servers.map((s) => [s.peer, s.start, s.end, s.weightBytes, s.kvBytesPerPosition, s.rttMs]), [['A', 1, 4, 60, 12, 5], ['B', 4, 7, 60, 12, 7]])
  assert.deepEqual(plan.coverage.map((c) => c.peers), [['A'], ['A'], ['A'], ['B'], ['B'], ['B']])
  assert.deepEqual(plan.uncovered, [])
  assert.equal(plan.fits, true)
  assert.deepEqual(plan.route, [{ start: 1, end: 4, peer: 'A' }, { start: 4, end: 7, peer: 'B' }])
  // middle: (5 + 3 x 2) + (7 + 3 x 3) = 27 ms; local head + tail: median ms per layer (3) x 2 = 6 ms (estimated)
  assert.equal(plan.projected?.middleMsPerToken, 27)
  assert.equal(plan.projected?.localMsPerToken, 6)
  assert.equal(plan.projected?.tokensPerSecond, 1000 / 33)
  assert.equal(plan.projected?.localMeasured, false)
  assert.equal(plan.clientBytes, 100 + 10 + 30)
  // the local part measured on this node replaces the estimate
  const measured = describeLivePool(facts, [a, b], [probed(a, 5), probed(b, 7)], { local: { headMs: 1.5, tailMs: 2.5 } })
  assert.deepEqual([measured.projected?.localMsPerToken, measured.projected?.localMeasured, measured.projected?.msPerToken], [4, true, 31])
  assert.equal(plan.poolFreeMemoryBytes, 2000)
})

test('a live pool with a gap: the uncovered layers, their bytes, no route', () => {
  const a = record('A', 1, 3)
  const b = record('B', 5, 7)
  const plan = describeLivePool(facts, [a, b], [probed(a, 1), probed(b, 1)])
  assert.deepEqual(plan.uncovered, [{ start: 3, end: 5 }])
  assert.equal(plan.uncoveredBytes, 40)
  assert.equal(plan.fits, false)
  assert.equal(plan.route, null)
  assert.equal(plan.projected, null)
  assert.ok(plan.notes.some((n) => /no route/.test(n)))
  assert.equal(kvBytesPerPosition({ numKvHeads: 8, headDim: 128 }, 3), 3 * 2 * 8 * 128 * 4)
})
