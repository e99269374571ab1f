import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decodeActivationFrame, encodeActivationFrame } from '../../src/usxf/index.ts'

test('activation frames decode from a Node Buffer at any byte offset, for every quantization', () => {
  const values = Float32Array.from({ length: 3 * 64 }, (_, i) => Math.sin(i) * 4)
  for (const quantization of ['none', 'f16', 'int8-block'] as const) {
    const encoded = encodeActivationFrame({ step: 7, positionStart: 12, rows: 3, width: 64, values }, { quantization })
    const direct = decodeActivationFrame(encoded)
    for (const offset of [1, 2, 3, 5]) {
      // protobuf decoding hands out Buffers that share one allocation at arbitrary offsets
      const host = Buffer.alloc(encoded.byteLength + offset + 3)
      host.set(encoded, offset)
      const frame = decodeActivationFrame(host.subarray(offset, offset + encoded.byteLength))
      assert.equal(frame.quantization, quantization)
      assert.equal(frame.step, 7)
      assert.deepEqual(Array.from(frame.values), Array.from(direct.values))
    }
  }
})
