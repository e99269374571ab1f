import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chooseAutoSpan, AutoSpanError, type AutoSpanInput } from '../../src/split/index.ts'

/** 10 layers of 100 bytes, KV 1 byte per layer-position, 1 session x 10 positions: 110 bytes a layer. */
function input (over: Partial<AutoSpanInput> = {}): AutoSpanInput {
  return { numLayers: 10, layerBytes: new Array(10).fill(100), kvBytesPerLayerPosition: 1, maxSessions: 1, maxLength: 10, memoryBytes: 330, servers: [], ...over }
}

const span = (c: { start: number, end: number }): [number, number] => [c.start, c.end]

test('an empty pool: as many layers as fit, from the first middle layer', () => {
  const choice = chooseAutoSpan(input())
  assert.deepEqual(span(choice), [1, 4])
  assert.equal(choice.memoryBytes, 330)
  assert.deepEqual(choice.coverage.map((c) => c.servers), new Array(8).fill(0))
})

test('never the head or tail layers, and never more than the middle', () => {
  assert.deepEqual(span(chooseAutoSpan(input({ memoryBytes: 1e9 }))), [1, 9])
  assert.deepEqual(span(chooseAutoSpan(input({ memoryBytes: 1e9, headLayers: 2, tailLayers: 3 }))), [2, 7])
  assert.deepEqual(span(chooseAutoSpan(input({ memoryBytes: 1e9, maxLayers: 2 }))), [1, 3])
})

test('takes the layers no server covers', () => {
  const servers = [{ start: 1, end: 4, tokensPerSecond: 50 }, { start: 7, end: 9, tokensPerSecond: 50 }]
  assert.deepEqual(span(chooseAutoSpan(input({ servers }))), [4, 7])
})

test('with every layer covered, the span with the fewest servers, then the least throughput', () => {
  // layers 1-4 twice, 5-8 once: take 5-8's first three
  const twice = [{ start: 1, end: 5, tokensPerSecond: 10 }, { start: 1, end: 5, tokensPerSecond: 10 }, { start: 5, end: 9, tokensPerSecond: 10 }]
  assert.deepEqual(span(chooseAutoSpan(input({ servers: twice }))), [5, 8])
  // one server each, but 1-4 is slow
  const slow = [{ start: 1, end: 5, tokensPerSecond: 2 }, { start: 5, end: 9, tokensPerSecond: 20 }]
  assert.deepEqual(span(chooseAutoSpan(input({ servers: slow }))), [1, 4])
  // a lone weak layer in the middle is inside the chosen window
  const hole = [{ start: 1, end: 6, tokensPerSecond: 20 }, { start: 7, end: 9, tokensPerSecond: 20 }, { start: 6, end: 7, tokensPerSecond: 1 }]
  const choice = chooseAutoSpan(input({ servers: hole }))
  assert.ok(choice.start <= 6 && 6 < choice.end, `window ${choice.start}-${choice.end} holds layer 6`)
  assert.match(choice.reason, /layer 6 is served by 1 server/)
})

test('KV for every session counts against memory; too little memory is a typed error', () => {
  // 4 sessions x 10 positions x 1 byte = 40 bytes of KV a layer: 140 a layer, 2 fit in 330
  assert.deepEqual(span(chooseAutoSpan(input({ maxSessions: 4 }))), [1, 3])
  assert.throws(() => chooseAutoSpan(input({ memoryBytes: 109 })), (err: unknown) => err instanceof AutoSpanError && err.code === 'ERR_NO_MEMORY' && /one layer needs 110 bytes/.test(err.message))
})

test('layers of different sizes: the window must fit as a whole', () => {
  const layerBytes = [100, 100, 100, 500, 100, 100, 100, 100, 100, 100]
  // a 3-layer window fits only where it avoids layer 3
  assert.deepEqual(span(chooseAutoSpan(input({ layerBytes }))), [4, 7])
})

test('bad input is refused', () => {
  assert.throws(() => chooseAutoSpan(input({ numLayers: 2, layerBytes: [1, 1] })), /no middle/)
  assert.throws(() => chooseAutoSpan(input({ layerBytes: [1] })), /layerBytes/)
  assert.throws(() => chooseAutoSpan(input({ memoryBytes: Number.NaN })), /memoryBytes/)
})
