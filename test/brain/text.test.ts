import { test } from 'node:test'
import assert from 'node:assert/strict'
import { porterStem } from '../../src/brain/porter.ts'
import { terms, foldText } from '../../src/brain/text.ts'
import { bandKeys, containment, jaccard, minhash, shingleSet, winnow } from '../../src/brain/fingerprint.ts'
import { parseTime } from '../../src/brain/time.ts'
import { canonicalBytes } from '../../src/brain/records.ts'

test('the Porter stemmer gives the published results', () => {
  const cases: Record<string, string> = {
    caresses: 'caress', ponies: 'poni', ties: 'ti', cats: 'cat', feed: 'feed', agreed: 'agre', plastered: 'plaster',
    motoring: 'motor', sing: 'sing', conflated: 'conflat', troubled: 'troubl', sized: 'size', hopping: 'hop', falling: 'fall',
    filing: 'file', happy: 'happi', relational: 'relat', conditional: 'condit', rational: 'ration', valenci: 'valenc',
    digitizer: 'digit', triplicate: 'triplic', hopeful: 'hope', goodness: 'good', revival: 'reviv', allowance: 'allow',
    adjustable: 'adjust', generalizations: 'gener', controlling: 'control', rolling: 'roll', moving: 'move', moved: 'move'
  }
  for (const [word, stem] of Object.entries(cases)) assert.equal(porterStem(word), stem, word)
  // non-ASCII and short words pass through
  assert.equal(porterStem('größer'), 'größer')
  assert.equal(porterStem('is'), 'is')
})

test('terms fold case and diacritics and split on anything but letters and digits', () => {
  assert.deepEqual(terms('Café RÉSUMÉS: naïve-ly moving, 2024!'), ['cafe', 'resum', 'naiv', 'ly', 'move', '2024'])
  assert.equal(foldText('Zürich Ångström'), 'zurich angstrom')
})

test('fingerprints: deterministic, near-duplicates collide in a band, unrelated texts do not', () => {
  const a = shingleSet('The quarterly budget review moved to Thursday afternoon in room 4')
  const b = shingleSet('the quarterly budget review moved to thursday afternoon, in room 4!')
  const c = shingleSet('Marketing wants the new logo in blue and orange for the spring campaign')
  assert.deepEqual(a, shingleSet('The quarterly budget review moved to Thursday afternoon in room 4'))
  assert.equal(jaccard(a, b), 1)
  assert.ok(jaccard(a, c) < 0.1)
  const bandsA = bandKeys(minhash(a))
  assert.ok(bandKeys(minhash(b)).some((band, i) => band === bandsA[i]))
  assert.ok(!bandKeys(minhash(c)).some((band, i) => band === bandsA[i]))
  assert.equal(containment(shingleSet('budget review'), a), 1)
  // winnowing keeps the minimum of every window and never loses a run of `window` shingles
  assert.deepEqual(winnow([5, 3, 8, 1, 9, 7, 2, 6], 4), [1, 2])
})

test('times are strict ISO 8601', () => {
  assert.equal(parseTime('2024-05-01'), Date.parse('2024-05-01T00:00:00Z'))
  assert.equal(parseTime('2024-05-01T12:30:00+02:00'), Date.parse('2024-05-01T10:30:00Z'))
  assert.equal(parseTime('2024-05-01 12:30'), Date.parse('2024-05-01T12:30:00Z'))
  for (const bad of ['yesterday', '05/01/2024', '2024-02-30', '2024-13-01', '', '2024-05-01T25:00:00Z', 'NaN']) {
    assert.throws(() => parseTime(bad), { code: 'ERR_INVALID_DATE' }, bad)
  }
})

test('canonical records sort keys at every depth and refuse non-integers', () => {
  const bytes = new TextDecoder().decode(canonicalBytes({ b: 1, a: { d: 'x', c: [2, 1] }, z: null }))
  assert.equal(bytes, '{"a":{"c":[2,1],"d":"x"},"b":1,"z":null}')
  assert.throws(() => canonicalBytes({ a: 0.5 }), TypeError)
})
