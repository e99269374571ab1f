import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  UsxfDecoder, decodeActivationFrame, encodeActivationFrame, encodeStateToBytes, openRecord, splitRecords, type UsxfQuantization, type UsxfStateInput
} from '../../src/usxf/index.ts'
import { REPO_ROOT } from '../model/fixtures.ts'
import { collect, hexSha256, testIdentity } from './helpers.ts'

// The vectors of docs/usxf.md: a kv state of one layer, one kv head of 4 values, 3 positions,
// blocks of 2 positions, 16-byte chunks, f32, signed by the key of docs/protocols.md.
const STREAM_HEX = [
  '01bf000000555358460100080112440a20b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e34391012209a129038d9a00aed0c',
  'f6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c1a104c6c616d61466f7243617573616c4c4d2001300138024001480450085a0909000000000088c3',
  '4068037801900102980110a2012079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664a80180d095ffbc31b2011000010203040506',
  '0708090a0b0c0d0e0fa6f07ade021c000000000000000000000000000000000080bf000040bf000000bf000080be7bd0967a021c0000000100000000000000',
  '10000000000000000000803e0000003f0000403f3611783b021c0000000200000000000000200000000000803f0000403f0000003f0000803eb370c29d021c',
  '00000003000000000000003000000000000080000080be000000bf000040bffeb12cdc021c0000000400000001000000000000000000803f0000a03f0000c0',
  '3f0000e03f579cbf28021c000000050000000100000010000000000080bf0000a0bf0000c0bf0000e0bf77f625a2038a0000000802100618602240aacb7b26',
  '88bae0b9718202db4e5140a63e3d8fa6da50ee53c5876ce0b91aa96cb40310bca33e09b011122842746594a68d023f5e8ea9e6e5c0c02ed9213c01e62a40',
  '4f83149ca33ba25fc830610f767d3e415cf5f8ca87886291c14608e534959c0be833ff50d299b00141a4e1c33c458bee682cb4c02f24a83295046c38656486',
  '0acc0b782a'
].join('')
const STREAM_SHA256 = 'd55ea78ec0296e69ddf3821a84f9594f238cd2bb047641aaec12248f4777e6ac'
const HEADER_BODY_SHA256 = '0d30f3b2f33171cf6bc5eef76eec62657de1a9858c59cb14a8355b8f9c97f17e'
const BLOCK_HASHES = 'aacb7b2688bae0b9718202db4e5140a63e3d8fa6da50ee53c5876ce0b91aa96cb40310bca33e09b011122842746594a68d023f5e8ea9e6e5c0c02ed9213c01e6'
const SIGNATURE = '4f83149ca33ba25fc830610f767d3e415cf5f8ca87886291c14608e534959c0be833ff50d299b00141a4e1c33c458bee682cb4c02f24a83295046c386564860a'

const FRAME_VALUES = Float32Array.from({ length: 8 }, (_, i) => (i - 3.5) / 2)
const FRAME_HEX: Record<UsxfQuantization, string> = {
  none: '5558010000000000070000002a000000010000000800000020000000000000000000e0bf0000a0bf000040bf000080be0000803e0000403f0000a03f0000e03fb5cb0de8',
  f16: '5558010100000000070000002a0000000100000008000000100000000000000000bf00bd00ba00b40034003a003d003f930e97d2',
  'int8-block': '5558010204000000070000002a0000000100000008000000100000000000000087c3613c87c3613c81a5caee12365b7fd62c68cf'
}

function vectorInput (): UsxfStateInput {
  const planes = [0, 1].map((p) => Float32Array.from({ length: 12 }, (_, i) => (p === 0 ? 1 : -1) * (i * 0.25 - 1)))
  return {
    kind: 'kv',
    model: { configSha256: hexSha256('config'), weightsSha256: hexSha256('weights') },
    architecture: 'LlamaForCausalLM',
    numLayers: 1,
    layerStart: 0,
    layerEnd: 1,
    numHeads: 2,
    numKvHeads: 1,
    headDim: 4,
    hiddenSize: 8,
    rope: { theta: 10000, scaling: null },
    positionStart: 0,
    seqLen: 3,
    tokenIds: null,
    dtype: 'f32',
    planes
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

test('the state stream vector encodes byte for byte and verifies', async () => {
  const signer = await testIdentity()
  const bytes = await encodeStateToBytes(vectorInput(), { signer, blockTokens: 2, chunkBytes: 16, createdAt: 1_700_000_000_000, streamId: Uint8Array.from({ length: 16 }, (_, i) => i) })
  assert.equal(hex(bytes), STREAM_HEX)
  assert.equal(createHash('sha256').update(bytes).digest('hex'), STREAM_SHA256)
  const records = await collect(splitRecords([bytes]))
  assert.deepEqual(records.map((r) => r.length), [200, 37, 37, 37, 37, 37, 37, 147])
  assert.equal(createHash('sha256').update(openRecord(records[0]).body).digest('hex'), HEADER_BODY_SHA256)
  const decoder = new UsxfDecoder({ expectedProducer: signer.publicKey })
  for (const record of records) await decoder.push(record)
  const state = decoder.finish()
  assert.equal(hex(state.trailer.blockHashes), BLOCK_HASHES)
  assert.equal(hex(state.trailer.signature), SIGNATURE)
  assert.deepEqual(state.planes, vectorInput().planes)
})

test('the activation frame vectors encode byte for byte and decode', () => {
  for (const [quantization, expected] of Object.entries(FRAME_HEX) as Array<[UsxfQuantization, string]>) {
    const frame = encodeActivationFrame({ step: 7, positionStart: 42, rows: 1, width: 8, values: FRAME_VALUES }, { quantization, quantGroup: 4 })
    assert.equal(hex(frame), expected, quantization)
    const decoded = decodeActivationFrame(frame, { width: 8 })
    assert.equal(decoded.step, 7)
    assert.equal(decoded.positionStart, 42)
    if (quantization !== 'int8-block') assert.deepEqual(decoded.values, FRAME_VALUES)
  }
})

test('docs/usxf.md carries the same vectors', async () => {
  const doc = (await readFile(join(REPO_ROOT, 'docs', 'usxf.md'), 'utf8')).replace(/\s+/g, '')
  for (const value of [STREAM_HEX, STREAM_SHA256, HEADER_BODY_SHA256, BLOCK_HASHES, SIGNATURE, ...Object.values(FRAME_HEX)]) {
    assert.ok(doc.includes(value), `docs/usxf.md lacks ${value.slice(0, 32)}…`)
  }
})
