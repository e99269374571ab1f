import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/model/index.ts'
import {
  DTYPES, FRAME_OVERHEAD, QUANTIZATIONS, UsxfDecoder, UsxfEncoder, crc32c, decodeActivationFrame, dequantizeInt8, quantizeInt8, decodeStream, encodeActivationFrame, encodeStateToBytes,
  frameBytes, openRecord, payloadSize, splitRecords,
  type UsxfHeaderInfo, type UsxfQuantization
} from '../../src/usxf/index.ts'
import { f16BitsToF32Bits, f32ToF16Bits } from '../../src/usxf/half.ts'
import { CRC32C_IMPLEMENTATION, crc32cJs, crc32cWasm } from '../../src/usxf/crc32c.ts'
import { collect, maxAbsDiff, otherIdentity, seededValues, syntheticState, testIdentity } from './helpers.ts'

test('crc32c matches the published check values, in pieces and at any alignment', () => {
  const ascii = new TextEncoder().encode('123456789')
  assert.equal(crc32c(ascii), 0xe3069283)
  // RFC 3720 appendix B.4
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa)
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43)
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e)
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c)
  const data = new Uint8Array(1000).map((_, i) => (i * 131 + 7) & 0xff)
  const whole = crc32c(data)
  for (const cut of [0, 1, 3, 17, 500, 999, 1000]) {
    assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), whole, `split at ${cut}`)
  }
  const shifted = new Uint8Array(1003)
  for (let offset = 0; offset < 3; offset++) {
    shifted.set(data, offset)
    assert.equal(crc32c(shifted.subarray(offset, offset + 1000)), whole, `offset ${offset}`)
  }
  // the native and WebAssembly paths (large inputs; pieces larger than the WebAssembly memory) equal the JavaScript loop
  const big = new Uint8Array(5 * 1024 * 1024 + 13).map((_, i) => (i * 2654435761) >>> 24)
  for (const [start, end] of [[0, big.length], [1, 4097], [3, 1024 * 1024 + 5], [7, 1030], [5, 300]]) {
    const piece = big.subarray(start, end)
    for (const [name, crc] of [['default', crc32c], ['wasm', crc32cWasm]] as const) {
      assert.equal(crc(piece), crc32cJs(piece), `${name} ${start}-${end}`)
      assert.equal(crc(piece, 0x12345678), crc32cJs(piece, 0x12345678), `${name} ${start}-${end} continued`)
    }
  }
  // this machine has a build of the addon; a platform without one falls back to WebAssembly
  assert.equal(CRC32C_IMPLEMENTATION, 'native')
})

test('fast f16 conversions agree with the model module bit for bit', () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i)
  const mine = new Float32Array(65536)
  f16BitsToF32Bits(all, new Uint32Array(mine.buffer))
  const theirs = f16ToF32(all)
  for (let i = 0; i < 65536; i++) assert.ok(Object.is(mine[i], theirs[i]) || (Number.isNaN(mine[i]) && Number.isNaN(theirs[i])), `f16 ${i.toString(16)}`)
  const bits = new Uint32Array(1 << 20)
  for (let i = 0; i < bits.length; i++) bits[i] = Math.imul(i, 0x9e3779b1) >>> 0
  const halves = new Uint16Array(bits.length)
  f32ToF16Bits(bits, halves)
  assert.deepEqual(halves, f32ToF16(new Float32Array(bits.buffer)))
})

function expectedValues (f32: Float32Array, dtype: string, quantization: UsxfQuantization): Float32Array {
  const source = dtype === 'f32' ? f32 : dtype === 'f16' ? f16ToF32(f32ToF16(f32)) : bf16ToF32(f32ToBf16(f32))
  return quantization === 'f16' ? f16ToF32(f32ToF16(source)) : source
}

test('every dtype and quantization round-trips, for kv and activation states', async () => {
  const signer = await testIdentity()
  for (const kind of ['kv', 'activations'] as const) {
    for (const dtype of DTYPES) {
      for (const quantization of QUANTIZATIONS) {
        const { input, f32Planes } = syntheticState({ kind, dtype, seqLen: 37, seed: 3 })
        // blocks of 8 positions do not divide 37; 100-byte chunks split every block
        const encoder = new UsxfEncoder(input, { signer, quantization, blockTokens: 8, chunkBytes: 100, quantGroup: 16 })
        const records = await collect(encoder.records())
        const size = payloadSize(encoder.header)
        assert.equal(records.length, size.chunkCount + 2)
        const decoded = await decodeStream(records)
        assert.equal(decoded.header.quantization, quantization)
        assert.equal(decoded.planes.length, f32Planes.length)
        const label = `${kind} ${dtype} ${quantization}`
        for (let p = 0; p < f32Planes.length; p++) {
          if (quantization === 'int8-block') {
            // error at most half a step of the group's scale (max |x| / 127 / 2), plus f32 rounding
            const reference = expectedValues(f32Planes[p], dtype, 'none')
            assert.ok(maxAbsDiff(decoded.planes[p], reference) <= 4 / 127 / 2 + 1e-6, label)
          } else {
            assert.deepEqual(decoded.planes[p], expectedValues(f32Planes[p], dtype, quantization), label)
          }
        }
      }
    }
  }
})

test('int8-block: every block equals the specified quantization of its values in order', async () => {
  const signer = await testIdentity()
  // 16-value groups; blocks of 8 rows x 8 wide align with the groups, the last (5 rows) does not
  const { input, f32Planes } = syntheticState({ seqLen: 37, headDim: 8 })
  const decoded = await decodeStream(await collect(new UsxfEncoder(input, { signer, quantization: 'int8-block', quantGroup: 16, blockTokens: 8 }).records()))
  for (let b = 0; b * 8 < 37; b++) {
    const rows = Math.min(8, 37 - b * 8)
    const values = Float32Array.from(f32Planes.flatMap((p) => [...p.subarray(b * 64, b * 64 + rows * 8)]))
    const groups = Math.ceil(values.length / 16)
    const scales = new Float32Array(groups)
    const q = new Int8Array(values.length)
    quantizeInt8(values, 16, scales, q)
    const expected = new Float32Array(values.length)
    dequantizeInt8(q, scales, 16, 0, expected)
    const got = Float32Array.from(decoded.planes.flatMap((p) => [...p.subarray(b * 64, b * 64 + rows * 8)]))
    assert.deepEqual(got, expected, `block ${b}`)
  }
  assert.throws(() => quantizeInt8(Float32Array.of(1, NaN), 2, new Float32Array(1), new Int8Array(2)), { code: 'ERR_USXF_MALFORMED' })
  assert.throws(() => quantizeInt8(Float32Array.of(1, -Infinity), 2, new Float32Array(1), new Int8Array(2)), { code: 'ERR_USXF_MALFORMED' })
})

test('int8-block scales follow the spec and decode within half a step per group', async () => {
  const signer = await testIdentity()
  const { input, f32Planes } = syntheticState({ seqLen: 64, headDim: 32, layers: 1, kvHeads: 1 })
  const decoded = await decodeStream(await collect(new UsxfEncoder(input, { signer, quantization: 'int8-block', quantGroup: 32, blockTokens: 64 }).records()))
  for (let p = 0; p < f32Planes.length; p++) {
    for (let g = 0; g < f32Planes[p].length; g += 32) {
      const group = f32Planes[p].subarray(g, g + 32)
      const m = group.reduce((a, v) => Math.max(a, Math.abs(v)), 0)
      assert.ok(maxAbsDiff(decoded.planes[p].subarray(g, g + 32), group) <= m / 127 / 2 + 1e-6)
    }
  }
})

test('a byte stream split anywhere decodes; the decoder works record by record', async () => {
  const signer = await testIdentity()
  const { input, f32Planes } = syntheticState({ seqLen: 20 })
  const bytes = await encodeStateToBytes(input, { signer, blockTokens: 7, chunkBytes: 64 })
  for (const piece of [1, 5, 9, 64, 1000]) {
    const pieces = Array.from({ length: Math.ceil(bytes.length / piece) }, (_, i) => bytes.subarray(i * piece, (i + 1) * piece))
    const decoded = await decodeStream(pieces)
    assert.deepEqual(decoded.planes, f32Planes, `pieces of ${piece}`)
  }
  // token ids travel only when given, one per position
  const withTokens = syntheticState({ seqLen: 5, tokenIds: [5, 6, 7, 8, 9] })
  const decoded = await decodeStream([await encodeStateToBytes(withTokens.input, { signer })])
  assert.deepEqual(decoded.header.tokenIds, [5, 6, 7, 8, 9])
  assert.equal((await decodeStream([bytes])).header.tokenIds, null)
})

test('an empty state (no positions) is a header and a signed trailer', async () => {
  const signer = await testIdentity()
  const { input } = syntheticState({ seqLen: 0 })
  const records = await collect(new UsxfEncoder(input, { signer }).records())
  assert.equal(records.length, 2)
  const decoded = await decodeStream(records)
  assert.equal(decoded.header.seqLen, 0)
})

// ---- corruption ----

async function encodedRecords (): Promise<{ records: Uint8Array[], f32Planes: Float32Array[] }> {
  const signer = await testIdentity()
  const { input, f32Planes } = syntheticState({ seqLen: 30 })
  return { records: await collect(new UsxfEncoder(input, { signer, blockTokens: 8, chunkBytes: 200 }).records()), f32Planes }
}

async function decodeError (records: Uint8Array[], options: ConstructorParameters<typeof UsxfDecoder>[0] = {}): Promise<{ code: string, message: string }> {
  try {
    await decodeStream(records, options)
  } catch (err) {
    return err as { code: string, message: string }
  }
  assert.fail('the stream decoded')
}

/** Rewrites a record's CRC after its bytes were changed on purpose. */
function reseal (record: Uint8Array): Uint8Array {
  new DataView(record.buffer, record.byteOffset).setUint32(record.byteLength - 4, crc32c(record.subarray(0, record.byteLength - 4)), true)
  return record
}

test('a truncated stream is refused as truncated, wherever it is cut', async () => {
  const { records } = await encodedRecords()
  const bytes = Buffer.concat(records)
  for (const cut of [0, 3, 20, records[0].length, records[0].length + 50, bytes.length - records[records.length - 1].length, bytes.length - 1]) {
    const err = await decodeError(cut === 0 ? [] : [bytes.subarray(0, cut)])
    assert.equal(err.code, 'ERR_USXF_TRUNCATED', `cut at ${cut}: ${err.message}`)
  }
  // a trailer that comes before every chunk arrived
  const err = await decodeError([...records.slice(0, 3), records[records.length - 1]])
  assert.equal(err.code, 'ERR_USXF_TRUNCATED')
})

test('a flipped bit in any record is caught by its CRC-32C', async () => {
  const { records } = await encodedRecords()
  for (let r = 0; r < records.length; r++) {
    for (const at of [0, 6, Math.floor(records[r].length / 2), records[r].length - 5]) {
      const damaged = records.map((x) => x.slice())
      damaged[r][at] ^= 0x10
      const err = await decodeError(damaged)
      // flipping the length field makes the record's size inconsistent instead
      assert.ok(err.code === 'ERR_USXF_CHECKSUM' || (at > 0 && at < 5 && err.code === 'ERR_USXF_MALFORMED'), `record ${r} byte ${at}: ${err.code} ${err.message}`)
      if (at >= 5) assert.equal(err.code, 'ERR_USXF_CHECKSUM')
    }
  }
})

test('a chunk whose CRC was fixed up after tampering fails its block hash', async () => {
  const { records } = await encodedRecords()
  for (const r of [1, Math.floor(records.length / 2), records.length - 2]) {
    const damaged = records.map((x) => x.slice())
    damaged[r][9 + 12 + 3] ^= 0x01
    reseal(damaged[r])
    const err = await decodeError(damaged)
    assert.equal(err.code, 'ERR_USXF_BLOCK_HASH', err.message)
  }
})

test('a bad signature, or another signer than expected, is refused', async () => {
  const { records } = await encodedRecords()
  const trailer = records[records.length - 1]
  const damaged = records.map((x) => x.slice())
  const last = damaged[damaged.length - 1]
  last[last.length - 4 - 10] ^= 0x01 // inside the signature, the trailer's last field
  reseal(last)
  assert.equal((await decodeError(damaged)).code, 'ERR_USXF_SIGNATURE')
  assert.ok(trailer.length > 64)
  // A stream re-signed by another key: valid, but not from the producer we expect.
  const other = await otherIdentity()
  const { input } = syntheticState({ seqLen: 30 })
  const foreign = await collect(new UsxfEncoder(input, { signer: other, blockTokens: 8 }).records())
  const signer = await testIdentity()
  assert.equal((await decodeError(foreign, { expectedProducer: signer.publicKey })).code, 'ERR_USXF_PRODUCER')
  // A header whose producer field was swapped (CRC fixed) no longer matches the signature.
  const swapped = records.map((x) => x.slice())
  const header = swapped[0]
  const at = Buffer.from(header).indexOf(Buffer.from(signer.publicKey))
  assert.ok(at > 0)
  header.set(other.publicKey, at)
  reseal(header)
  assert.equal((await decodeError(swapped)).code, 'ERR_USXF_SIGNATURE')
})

test('records out of order, or of the wrong kind, are malformed', async () => {
  const { records } = await encodedRecords()
  const swapped = [...records]
  ;[swapped[1], swapped[2]] = [swapped[2], swapped[1]]
  assert.equal((await decodeError(swapped)).code, 'ERR_USXF_MALFORMED')
  assert.equal((await decodeError(records.slice(1))).code, 'ERR_USXF_MALFORMED')
  assert.equal((await decodeError([...records, records[1]])).code, 'ERR_USXF_MALFORMED')
  const badMagic = records.map((x) => x.slice())
  badMagic[0][5] ^= 0xff
  reseal(badMagic[0])
  assert.equal((await decodeError(badMagic)).code, 'ERR_USXF_MALFORMED')
})

test('the header is seen before any payload, so a receiver can refuse early', async () => {
  const { records } = await encodedRecords()
  let seen: UsxfHeaderInfo | null = null
  const decoder = new UsxfDecoder({ onHeader: (h) => { seen = h; throw Object.assign(new Error('no'), { code: 'ERR_TEST_REFUSED' }) } })
  await assert.rejects(decoder.push(records[0]), { code: 'ERR_TEST_REFUSED' })
  assert.equal((seen as UsxfHeaderInfo | null)?.seqLen, 30)
  assert.equal(decoder.receivedPayloadBytes, 0)
})

test('splitRecords refuses a record longer than its limit before buffering it', async () => {
  const huge = new Uint8Array(9)
  huge[0] = 2
  new DataView(huge.buffer).setUint32(1, 0x7fffffff, true)
  await assert.rejects(collect(splitRecords([huge], 1 << 20)), { code: 'ERR_USXF_MALFORMED' })
  assert.throws(() => openRecord(new Uint8Array(3)), { code: 'ERR_USXF_MALFORMED' })
})

test('activation frames: round trips, a header within 128 bytes, and typed refusals', () => {
  const hidden = 2048
  const values = seededValues(hidden * 3, 11)
  for (const quantization of QUANTIZATIONS) {
    const frame = encodeActivationFrame({ step: 1, positionStart: 100, rows: 3, width: hidden, values }, { quantization })
    assert.equal(frame.length, frameBytes(3, hidden, { quantization }))
    const decoded = decodeActivationFrame(frame, { width: hidden, maxRows: 8 })
    assert.equal(decoded.rows, 3)
    const tolerance = quantization === 'none' ? 0 : quantization === 'f16' ? 4 * 2 ** -11 : 4 / 127 / 2 + 1e-6
    assert.ok(maxAbsDiff(decoded.values, values) <= tolerance, quantization)
  }
  // one position of a 2048-wide model at f16: hidden x 2 bytes plus a fixed overhead far below 128 B
  const single = encodeActivationFrame({ step: 2, positionStart: 5, rows: 1, width: hidden, values: values.subarray(0, hidden) })
  assert.ok(FRAME_OVERHEAD <= 128)
  assert.ok(single.length <= 1.05 * hidden * 2 + 128)
  const flipped = single.slice()
  flipped[40] ^= 4
  assert.throws(() => decodeActivationFrame(flipped), { code: 'ERR_USXF_CHECKSUM' })
  assert.throws(() => decodeActivationFrame(single.subarray(0, single.length - 9)), { code: 'ERR_USXF_TRUNCATED' })
  assert.throws(() => decodeActivationFrame(single, { width: 1024 }), { code: 'ERR_USXF_MALFORMED' })
  // unaligned input is copied, not misread
  const shifted = new Uint8Array(single.length + 1)
  shifted.set(single, 1)
  assert.deepEqual(decodeActivationFrame(shifted.subarray(1)).values, decodeActivationFrame(single).values)
})

test('large blocks are hashed off the main thread with the same result', async () => {
  const signer = await testIdentity()
  // 2 layers x 2 kv heads x 2 (K, V) x 64 values x 4 bytes = 2 KiB per position: 128-position blocks of 256 KiB
  const { input, f32Planes } = syntheticState({ layers: 2, kvHeads: 2, headDim: 64, seqLen: 300 })
  const records = await collect(new UsxfEncoder(input, { signer, blockTokens: 128, chunkBytes: 64 * 1024 }).records())
  const decoded = await decodeStream(records)
  assert.deepEqual(decoded.planes, f32Planes)
  // the signed hashes are the SHA-256 of the encoded blocks, whichever thread computed them
  const block0 = Buffer.concat(records.slice(1, 5).map((r) => r.subarray(5 + 12, r.length - 4)))
  assert.equal(block0.length, 128 * 2048)
  assert.equal(Buffer.from(decoded.trailer.blockHashes.subarray(0, 32)).toString('hex'), createHash('sha256').update(block0).digest('hex'))
  const damaged = records.map((r) => r.slice())
  damaged[6][100] ^= 1
  new DataView(damaged[6].buffer).setUint32(damaged[6].length - 4, crc32c(damaged[6].subarray(0, damaged[6].length - 4)), true)
  await assert.rejects(decodeStream(damaged), { code: 'ERR_USXF_BLOCK_HASH' })
})
