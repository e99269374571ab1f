/**
 * The Porter (1980) stemmer, applied to ASCII lowercase words. The brain stems in JavaScript (and
 * feeds FTS5 the stems) instead of using FTS5's porter tokenizer, so the query side, the document
 * side, the vocabulary look-ups and the fingerprints all see exactly the same terms.
 */

function isConsonant (word: string, i: number): boolean {
  const c = word.charCodeAt(i)
  // a e i o u
  if (c === 97 || c === 101 || c === 105 || c === 111 || c === 117) return false
  if (c === 121) return i === 0 ? true : !isConsonant(word, i - 1) // y
  return true
}

/** m() of the Porter paper: the number of VC sequences in word[0, end). */
function measure (word: string, end: number): number {
  let n = 0
  let i = 0
  while (i < end && isConsonant(word, i)) i++
  while (i < end) {
    while (i < end && !isConsonant(word, i)) i++
    if (i >= end) break
    n++
    while (i < end && isConsonant(word, i)) i++
  }
  return n
}

function hasVowel (word: string, end: number): boolean {
  for (let i = 0; i < end; i++) if (!isConsonant(word, i)) return true
  return false
}

function endsDoubleConsonant (word: string): boolean {
  const n = word.length
  return n >= 2 && word[n - 1] === word[n - 2] && isConsonant(word, n - 1)
}

/** *o: the stem ends cvc, where the last c is not w, x or y. */
function endsCvc (word: string, end: number): boolean {
  if (end < 3) return false
  if (!isConsonant(word, end - 1) || isConsonant(word, end - 2) || !isConsonant(word, end - 3)) return false
  const c = word[end - 1]
  return c !== 'w' && c !== 'x' && c !== 'y'
}

function replaceSuffix (word: string, suffix: string, replacement: string, minMeasure: number): string | undefined {
  if (!word.endsWith(suffix)) return undefined
  const stemEnd = word.length - suffix.length
  if (measure(word, stemEnd) > minMeasure) return word.slice(0, stemEnd) + replacement
  return word
}

const STEP2: Array<[string, string]> = [
  ['ational', 'ate'], ['tional', 'tion'], ['enci', 'ence'], ['anci', 'ance'], ['izer', 'ize'],
  ['bli', 'ble'], ['alli', 'al'], ['entli', 'ent'], ['eli', 'e'], ['ousli', 'ous'],
  ['ization', 'ize'], ['ation', 'ate'], ['ator', 'ate'], ['alism', 'al'], ['iveness', 'ive'],
  ['fulness', 'ful'], ['ousness', 'ous'], ['aliti', 'al'], ['iviti', 'ive'], ['biliti', 'ble'], ['logi', 'log']
]
const STEP3: Array<[string, string]> = [
  ['icate', 'ic'], ['ative', ''], ['alize', 'al'], ['iciti', 'ic'], ['ical', 'ic'], ['ful', ''], ['ness', '']
]
const STEP4 = ['al', 'ance', 'ence', 'er', 'ic', 'able', 'ible', 'ant', 'ement', 'ment', 'ent', 'ion', 'ou',
  'ism', 'ate', 'iti', 'ous', 'ive', 'ize']

function step1ab (word: string): string {
  if (word.endsWith('sses')) word = word.slice(0, -2)
  else if (word.endsWith('ies')) word = word.slice(0, -2)
  else if (!word.endsWith('ss') && word.endsWith('s')) word = word.slice(0, -1)

  if (word.endsWith('eed')) {
    if (measure(word, word.length - 3) > 0) word = word.slice(0, -1)
    return word
  }
  let stripped: string | undefined
  if (word.endsWith('ed') && hasVowel(word, word.length - 2)) stripped = word.slice(0, -2)
  else if (word.endsWith('ing') && hasVowel(word, word.length - 3)) stripped = word.slice(0, -3)
  if (stripped === undefined) return word
  word = stripped
  if (word.endsWith('at') || word.endsWith('bl') || word.endsWith('iz')) return word + 'e'
  if (endsDoubleConsonant(word)) {
    const last = word[word.length - 1]
    if (last !== 'l' && last !== 's' && last !== 'z') return word.slice(0, -1)
    return word
  }
  if (measure(word, word.length) === 1 && endsCvc(word, word.length)) return word + 'e'
  return word
}

function step1c (word: string): string {
  if (word.endsWith('y') && hasVowel(word, word.length - 1)) return word.slice(0, -1) + 'i'
  return word
}

function stepTable (word: string, table: Array<[string, string]>): string {
  for (const [suffix, replacement] of table) {
    if (word.endsWith(suffix)) return replaceSuffix(word, suffix, replacement, 0) ?? word
  }
  return word
}

function step4 (word: string): string {
  for (const suffix of STEP4) {
    if (!word.endsWith(suffix)) continue
    const stemEnd = word.length - suffix.length
    if (suffix === 'ion') {
      const before = word[stemEnd - 1]
      if (before !== 's' && before !== 't') return word
    }
    return measure(word, stemEnd) > 1 ? word.slice(0, stemEnd) : word
  }
  return word
}

function step5 (word: string): string {
  if (word.endsWith('e')) {
    const m = measure(word, word.length - 1)
    if (m > 1 || (m === 1 && !endsCvc(word, word.length - 1))) word = word.slice(0, -1)
  }
  if (word.endsWith('ll') && measure(word, word.length) > 1) word = word.slice(0, -1)
  return word
}

const ASCII_WORD = /^[a-z]+$/

/** Stems a lowercase word; words that are not plain ASCII letters or are shorter than 3 pass through. */
export function porterStem (word: string): string {
  if (word.length < 3 || word.length > 64 || !ASCII_WORD.test(word)) return word
  let w = step1ab(word)
  w = step1c(w)
  w = stepTable(w, STEP2)
  w = stepTable(w, STEP3)
  w = step4(w)
  w = step5(w)
  return w
}
