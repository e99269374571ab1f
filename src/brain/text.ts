import { porterStem } from './porter.ts'

const NON_WORD = /[^\p{L}\p{N}]+/u
const MARKS = /\p{M}+/gu
const MAX_TERM_LENGTH = 64

/** Case- and diacritic-insensitive form of a text: NFKD, combining marks removed, lowercase. */
export function foldText (text: string): string {
  return text.normalize('NFKD').replace(MARKS, '').toLowerCase()
}

/** The folded words of a text (letters and digits; everything else separates). */
export function words (text: string): string[] {
  const out: string[] = []
  for (const word of foldText(text).split(NON_WORD)) {
    if (word.length > 0) out.push(word.length > MAX_TERM_LENGTH ? word.slice(0, MAX_TERM_LENGTH) : word)
  }
  return out
}

// Stemming is the costliest step of indexing and vocabularies repeat: cache stems (bounded).
const stemCache = new Map<string, string>()
const STEM_CACHE_ENTRIES = 200_000

function stem (word: string): string {
  let stemmed = stemCache.get(word)
  if (stemmed === undefined) {
    stemmed = porterStem(word)
    if (stemCache.size >= STEM_CACHE_ENTRIES) stemCache.clear()
    stemCache.set(word, stemmed)
  }
  return stemmed
}

/** The index terms of a text: folded, stemmed words, in order (duplicates kept). */
export function terms (text: string): string[] {
  return words(text).map(stem)
}

// Function words carry no topic; they are kept in the full-text index (BM25's IDF weighs them
// down) but left out of fingerprints, where they would make unrelated texts look alike.
const STOP_WORDS = new Set(('a about above after again against all am an and any are as at be because been before being ' +
  'below between both but by can could did do does doing down during each few for from further had has have having he ' +
  'her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now ' +
  'of off on once only or other our ours ourselves out over own same she should so some such than that the their ' +
  'theirs them themselves then there these they this those through to too under until up very was we were what when ' +
  'where which while who whom why will with would you your yours yourself yourselves ll ve re s t d m don didn doesn ' +
  'isn wasn aren weren won shall may might must let lets also yes yeah ok okay oh hey hi hello thanks thank really ' +
  'just like get got well sure').split(' ').map(porterStem))

export function isStopTerm (term: string): boolean {
  return STOP_WORDS.has(term)
}

/** Terms that say what a text is about: index terms without function words. */
export function contentTerms (text: string): string[] {
  return terms(text).filter((term) => !STOP_WORDS.has(term))
}
