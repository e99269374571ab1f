import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compareActivations, resolveVerifyOptions } from '../../src/split/index.ts'
import { wireValues } from '../../src/split/verify-session.ts'

const WIDTH = 64

/** Rows like hidden states: mostly small values, a few large ones, some near zero. */
function activations (rows: number, seed: number): Float32Array {
  const out = new Float32Array(rows * WIDTH)
  let s = seed
  for (let i = 0; i < out.length; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31
    const u = s / 2 ** 31 - 0.5
    out[i] = i % 17 === 0 ? u * 60 : u * 2
  }
  return out
}

/** Multiplies every value by (1 + e), e alternating in sign: a compute difference of relative size e. */
function jitter (values: Float32Array, e: number): Float32Array {
  return values.map((v, i) => v * (1 + (i % 2 === 0 ? e : -e)))
}

test('honest differences pass: compute noise of 1e-5 in f32, and each side rounding its own result to f16 or int8-block', () => {
  const a = activations(12, 1)
  const b = jitter(a, 1e-5)
  assert.ok(compareActivations(a, b, WIDTH, 'none', 1e-3).ok)
  for (const quantization of ['f16', 'int8-block'] as const) {
    const cmp = compareActivations(wireValues(a, WIDTH, quantization), wireValues(b, WIDTH, quantization), WIDTH, quantization, 1e-3)
    assert.ok(cmp.ok, `${quantization}: ratio ${cmp.ratio}`)
    // a value exactly between two f16 steps or int8 levels rounds apart on the two sides: still within
    assert.ok(cmp.ratio <= 1)
  }
})

test('a perturbation beyond the tolerance fails, and the first wrong row is named', () => {
  const a = activations(8, 2)
  const b = a.slice()
  // one value of row 5 off by 1 % of its magnitude plus 1 % of the row
  b[5 * WIDTH + 3] += 0.01 * (Math.abs(b[5 * WIDTH + 3]) + 1) + 0.05
  for (const quantization of ['none', 'f16'] as const) {
    const cmp = compareActivations(wireValues(a, WIDTH, quantization), wireValues(b, WIDTH, quantization), WIDTH, quantization, 1e-3)
    assert.equal(cmp.ok, false, quantization)
    assert.equal(cmp.firstBadRow, 5)
    assert.ok(cmp.ratio > 1 && cmp.maxAbsDiff > 0.05)
  }
  // int8-block: 0.5 added to row 2 moves its values by many levels of their groups
  const big = a.slice()
  for (let i = 2 * WIDTH; i < 3 * WIDTH; i++) big[i] += 0.5
  assert.equal(compareActivations(wireValues(a, WIDTH, 'int8-block'), wireValues(big, WIDTH, 'int8-block'), WIDTH, 'int8-block', 1e-3).firstBadRow, 2)
})

test('NaN, infinities and shape mismatches never pass', () => {
  const a = activations(2, 3)
  const nan = a.slice()
  nan[7] = Number.NaN
  assert.equal(compareActivations(a, nan, WIDTH, 'f16', 1e-3).ok, false)
  const inf = a.slice()
  inf[70] = Infinity
  assert.equal(compareActivations(a, inf, WIDTH, 'none', 1e-3).firstBadRow, 1)
  assert.equal(compareActivations(a, a.subarray(WIDTH), WIDTH, 'none', 1e-3).ok, false)
  assert.ok(compareActivations(new Float32Array(WIDTH), new Float32Array(WIDTH), WIDTH, 'none', 1e-3).ok, 'all zeros equal')
})

test('verify options are checked at the boundary', () => {
  assert.deepEqual(resolveVerifyOptions(undefined), { rate: 0, canaries: 0, tolerance: 1e-3, localReferee: true, onReport: undefined })
  assert.equal(resolveVerifyOptions({ canaries: true }).canaries, 2)
  for (const bad of [{ rate: -0.1 }, { rate: 1.5 }, { rate: Number.NaN }, { canaries: 1.5 }, { canaries: 65 }, { tolerance: 0 }, { tolerance: 2 }]) {
    assert.throws(() => resolveVerifyOptions(bad), { code: 'ERR_INVALID_INPUT' }, JSON.stringify(bad))
  }
})
