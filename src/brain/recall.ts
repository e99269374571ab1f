/**
 * Recall: FTS5 BM25 over stemmed terms, fused with fingerprint containment (how much of the
 * query's words and word pairs a memory holds), then weighted by confidence and recency.
 *
 * User text never reaches FTS5 as syntax: the query is reduced to terms (letters and digits
 * only), each passed as a quoted string, so operators, quotes, parentheses and column filters in
 * the input are just text.
 *
 * Latency stays flat as the brain grows because BM25 is only ever computed over a bounded set of
 * rows: scoring costs 0.5-2 µs per matched row (more as the index grows), so an OR over a word in
 * half the corpus would cost milliseconds. A small planner, using exact document frequencies
 * (see Indexer.documentFrequency), picks the MATCH:
 * - the rarest content terms, OR-ed, while their postings fit the budget; the common terms left
 *   out carry little IDF and still count in the fingerprint score, which covers every query term;
 * - when every term is common, their AND (rarest first), taking the newest matches and weighing
 *   the query terms each holds by IDF (bm25() would walk every common term's whole doclist).
 */
import type { Statement } from 'better-sqlite3'
import { InvalidInputError } from '../util/index.ts'
import { timeFilter, timeParams } from './asof.ts'
import type { BrainContext } from './context.ts'
import { bandKeys, containment, fingerprintFromBlob, hash32, holds, minhash, shingleSetOfTerms } from './fingerprint.ts'
import { canonicalBytes, checkSignature, recordId } from './records.ts'
import { memoryRecordOfRow, tagsOfColumn, type MemoryRow } from './rows.ts'
import { END_OF_TIME, isoTime } from './time.ts'
import { isStopTerm, terms } from './text.ts'
import { SOURCES, VISIBILITIES, type RecallHit, type RecallOptions, type RecallResult } from './types.ts'
import { checkBytes, checkVisibility, textFrom, visibilityLevel } from './validate.ts'

export interface RecallTuning {
  /** Most postings (sum of document frequencies) the MATCH may touch. */
  postingsBudget: number
  /** Candidates ranked by BM25 before fusion, per hit asked for (at least 20). */
  candidatesPerHit: number
  bm25Weight: number
  fingerprintWeight: number
  /** Share of the score that confidence can take away (0.2: confidence 0 scores 80 %). */
  confidenceWeight: number
  recencyWeight: number
  recencyHalfLifeDays: number
  /** Return only the best of a group of near-duplicates (flagged by fingerprints at ingest). */
  collapseNearDuplicates: boolean
  /** With `expand`: rare terms taken from the best hits for a second, feedback query. */
  feedbackTerms: number
  /** With `expand`: how much a feedback-only hit's score counts against a direct hit's. */
  feedbackWeight: number
}

export const DEFAULT_RECALL_TUNING: RecallTuning = {
  postingsBudget: 150,
  candidatesPerHit: 2,
  bm25Weight: 0.6,
  fingerprintWeight: 0.4,
  confidenceWeight: 0.2,
  recencyWeight: 0.05,
  recencyHalfLifeDays: 90,
  collapseNearDuplicates: true,
  feedbackTerms: 4,
  feedbackWeight: 0.5
}

const MAX_QUERY_TERMS = 32
const MAX_MATCH_TERMS = 12
const MAX_AND_TERMS = 4
/** Shingles (about four content words) from which a query also looks up its LSH near-duplicates. */
const NEAR_DUPLICATE_QUERY_SHINGLES = 7
const DAY_MS = 86_400_000

interface Scored {
  seq: number
  family: string
  score: number
  bm25: number
  fingerprint: number
  recency: number
}

interface MatchPlan {
  match: string
  /**
   * 'ranked': FTS5 orders the matches by BM25. 'newest': the match is an AND of common terms
   * (or one very common term), where bm25() would walk each term's whole doclist for its IDF:
   * take the newest matches instead and weigh the query terms they hold by IDF here.
   */
  mode: 'ranked' | 'newest'
}

interface Candidate {
  seq: number
  bm: number
  fingerprint: Buffer
  confidence: number
  valid_from: number
  /** The id of the memory this one nearly duplicates (flagged at ingest), or its own id. */
  family: string
}

const HIT_COLUMNS = ['seq', 'id', 'author', 'key', 'content', 'kind', 'topic', 'tags', 'visibility', 'confidence', 'valid_from', 'valid_to',
  'created_at', 'supersedes', 'version', 'signature', 'source', 'team_id', 'recorded_at', 'superseded_at'] as const
type HitRow = Pick<MemoryRow, typeof HIT_COLUMNS[number]>

export interface Recaller {
  recall: (query: string, options?: RecallOptions) => RecallResult
}

/** Quotes a term for FTS5: a string literal, with embedded quotes doubled. */
export function ftsString (term: string): string {
  return '"' + term.replaceAll('"', '""') + '"'
}

export function createRecaller (ctx: BrainContext, tuning: RecallTuning = DEFAULT_RECALL_TUNING): Recaller {
  const { db } = ctx
  const filters = `${timeFilter('m')} AND m.visibility >= @vis
    AND (@kind IS NULL OR m.kind = @kind) AND (@topic IS NULL OR m.topic = @topic)
    AND (@author IS NULL OR m.author = @author) AND (@source IS NULL OR m.source = @source)
    AND (@team IS NULL OR m.team_id = @team)`
  const documentCount = db.prepare<[], { n: number | null }>('SELECT max(seq) AS n FROM memories')
  const select = (mode: MatchPlan['mode'], bounded: boolean): Statement => db.prepare(`SELECT m.seq, f.bm, m.fingerprint, m.confidence, m.valid_from, COALESCE(m.duplicate_of, m.id) AS family
    FROM (SELECT rowid, ${mode === 'ranked' ? 'bm25(memories_fts, 1.0, 0.5)' : '0.0'} AS bm FROM memories_fts WHERE memories_fts MATCH @match
          ORDER BY ${mode === 'ranked' ? 'bm' : 'rowid DESC'} ${bounded ? 'LIMIT @over' : ''}) f
    JOIN memories m ON m.seq = f.rowid
    WHERE ${filters}
    ORDER BY ${mode === 'ranked' ? 'f.bm' : 'm.seq DESC'} LIMIT @k`)
  // bounded first (rank then filter); unbounded only when filters threw away too many of the bounded rows
  const statements = {
    ranked: { bounded: select('ranked', true), unbounded: select('ranked', false) },
    newest: { bounded: select('newest', true), unbounded: select('newest', false) }
  }
  const nearDuplicates: Statement = db.prepare(`SELECT DISTINCT m.seq, 0.0 AS bm, m.fingerprint, m.confidence, m.valid_from, COALESCE(m.duplicate_of, m.id) AS family
    FROM fingerprint_bands b JOIN memories m ON m.seq = b.memory
    WHERE b.band IN (SELECT value FROM json_each(@bands)) AND ${filters} LIMIT 32`)
  // only what a hit shows and its provenance check reads: no fingerprint or derived columns
  const rowsBySeq = db.prepare<[string], HitRow>(`SELECT ${HIT_COLUMNS.join(', ')} FROM memories WHERE seq IN (SELECT value FROM json_each(?))`)
  const authorKey = db.prepare<[string], { public_key: Buffer }>('SELECT public_key FROM authors WHERE id = ?')
  function plan (queryTerms: string[], count: number): MatchPlan | undefined {
    const content = queryTerms.filter((t) => !isStopTerm(t))
    const pool = content.length > 0 ? content : queryTerms
    const withFrequency: Array<{ term: string, df: number }> = []
    for (const term of pool) {
      const df = ctx.indexer.documentFrequency(term)
      if (df > 0) withFrequency.push({ term, df })
    }
    if (withFrequency.length === 0) return undefined
    withFrequency.sort((a, b) => a.df - b.df)
    const budget = tuning.postingsBudget
    const rare: string[] = []
    let postings = 0
    for (const { term, df } of withFrequency) {
      if (rare.length >= MAX_MATCH_TERMS || postings + df > budget) break
      rare.push(term)
      postings += df
    }
    if (rare.length > 0) return { match: rare.map(ftsString).join(' OR '), mode: 'ranked' }
    // every term is common: intersect, rarest first, until the estimated result fits the budget
    const all: string[] = []
    let estimate = count
    for (const { term, df } of withFrequency.slice(0, MAX_AND_TERMS)) {
      all.push(term)
      estimate = estimate * df / Math.max(1, count)
      if (estimate <= budget) break
    }
    return { match: all.map(ftsString).join(' AND '), mode: 'newest' }
  }

  // Rows whose stored bytes were found to hash to their id, so each row is hashed once per process.
  const hashChecked = new Map<number, boolean>()

  /**
   * True when the stored bytes still hash to the id (the signature over those bytes was verified
   * when the record entered the brain) and, if asked, when the Ed25519 signature verifies now.
   */
  function provenanceValid (row: HitRow, checkEd25519: boolean): boolean {
    if (!checkEd25519) {
      const known = hashChecked.get(row.seq)
      if (known !== undefined) return known
    }
    const record = memoryRecordOfRow(row)
    const bytes = canonicalBytes(record)
    const hashValid = recordId(bytes) === row.id
    if (hashChecked.size >= 100_000) hashChecked.clear()
    hashChecked.set(row.seq, hashValid)
    if (!hashValid) return false
    if (!checkEd25519) return true
    const key = authorKey.get(row.author)
    return key !== undefined && checkSignature(record, bytes, key.public_key, row.signature) === undefined
  }

  /**
   * Pseudo-relevance feedback: the rarest terms of the two best hits that the query did not
   * have (a name, a place) make a second query, whose new hits join at a discount. Finds the
   * memories that talk about the same thing in other words than the question.
   */
  function expand (scored: Scored[], queryTerms: string[], params: Record<string, unknown>, limit: number): void {
    const seeds = rowsBySeq.all(JSON.stringify(scored.slice(0, 2).map((s) => s.seq)))
    const known = new Set(queryTerms)
    const feedback = new Map<string, number>()
    for (const row of seeds) {
      for (const term of terms(row.content)) {
        if (known.has(term) || isStopTerm(term) || feedback.has(term)) continue
        const df = ctx.indexer.documentFrequency(term)
        if (df >= 2 && df <= tuning.postingsBudget) feedback.set(term, df)
      }
    }
    const chosen = [...feedback.entries()].sort((a, b) => a[1] - b[1]).slice(0, tuning.feedbackTerms).map(([term]) => term)
    if (chosen.length === 0) return
    const k = Math.max(20, limit * tuning.candidatesPerHit)
    const rows = statements.ranked.bounded.all({ ...params, match: chosen.map(ftsString).join(' OR '), k, over: k + 10 }) as Candidate[]
    let best = 0
    for (const c of rows) if (c.bm < best) best = c.bm
    const present = new Set(scored.map((s) => s.seq))
    const top = scored.length > 0 ? scored[0].score : 1
    for (const c of rows) {
      if (present.has(c.seq) || best >= 0) continue
      scored.push({ seq: c.seq, family: c.family, score: tuning.feedbackWeight * top * (c.bm / best), bm25: 0, fingerprint: 0, recency: 0 })
    }
    scored.sort((a, b) => b.score - a.score || a.seq - b.seq)
  }

  function recall (queryInput: string, options: RecallOptions = {}): RecallResult {
    const query = textFrom(queryInput, 'query')
    checkBytes(query, ctx.limits.queryBytes, 'query')
    const limit = options.limit ?? 10
    if (!Number.isInteger(limit) || limit < 1 || limit > ctx.limits.maxRecallLimit) throw new InvalidInputError(`limit must be an integer from 1 to ${ctx.limits.maxRecallLimit}`)
    if (options.source != null && !(SOURCES as readonly string[]).includes(options.source)) throw new InvalidInputError(`source must be one of ${SOURCES.join(', ')}`)
    const time = timeParams(options.asOf)
    const params = {
      ...time,
      vis: visibilityLevel(checkVisibility(options.visibility)),
      kind: options.kind ?? null,
      topic: options.topic ?? null,
      author: options.author ?? null,
      source: options.source ?? null,
      team: options.teamId ?? null
    }
    ctx.indexer.flush()
    const queryTerms = [...new Set(terms(query))].slice(0, MAX_QUERY_TERMS)
    if (queryTerms.length === 0) return { hits: [] }

    const count = documentCount.get()?.n ?? 0
    const matchPlan = plan(queryTerms, count)
    const candidates = new Map<number, Candidate>()
    if (matchPlan !== undefined) {
      const k = Math.max(20, limit * tuning.candidatesPerHit)
      const chosen = statements[matchPlan.mode]
      let rows = chosen.bounded.all({ ...params, match: matchPlan.match, k, over: k + 10 }) as Candidate[]
      if (rows.length < k && (params.rt !== END_OF_TIME || params.vt !== null || params.vis > 0 || params.kind !== null || params.topic !== null ||
        params.author !== null || params.source !== null || params.team !== null)) {
        // filters may have dropped rows the bounded scan ranked first: rank them all
        rows = chosen.unbounded.all({ ...params, match: matchPlan.match, k }) as Candidate[]
      }
      for (const c of rows) candidates.set(c.seq, c)
    }
    const queryContent = queryTerms.filter((t) => !isStopTerm(t))
    const querySet = shingleSetOfTerms(queryContent)
    // a query long enough to be a restatement of a memory also looks for its near-duplicates
    if (querySet.length >= NEAR_DUPLICATE_QUERY_SHINGLES) {
      const bands = JSON.stringify(bandKeys(minhash(querySet)))
      for (const c of nearDuplicates.all({ ...params, bands }) as Candidate[]) if (!candidates.has(c.seq)) candidates.set(c.seq, c)
    }
    if (candidates.size === 0) return { hits: [] }

    let best = 0
    for (const c of candidates.values()) if (c.bm < best) best = c.bm
    // IDF of each content term, for candidates FTS5 did not score (newest matches, LSH neighbours)
    const weighted = (queryContent.length > 0 ? queryContent : queryTerms).map((term) => {
      const df = ctx.indexer.documentFrequency(term)
      return { hash: hash32(term), idf: Math.log(1 + (count - df + 0.5) / (df + 0.5)) }
    })
    const totalIdf = weighted.reduce((sum, w) => sum + w.idf, 0)
    const reference = time.vt ?? (time.rt < ctx.now() ? time.rt : ctx.now())
    const scored = [...candidates.values()].map((c) => {
      const set = fingerprintFromBlob(c.fingerprint)
      let bm25 = 0
      if (c.bm < 0) {
        bm25 = c.bm / best
      } else if (totalIdf > 0) {
        let held = 0
        for (const w of weighted) if (holds(set, w.hash)) held += w.idf
        bm25 = held / totalIdf
      }
      const fingerprint = containment(querySet, set)
      const ageDays = Math.max(0, reference - c.valid_from) / DAY_MS
      const recency = Math.pow(0.5, ageDays / tuning.recencyHalfLifeDays)
      const relevance = tuning.bm25Weight * bm25 + tuning.fingerprintWeight * fingerprint
      const score = relevance * (1 - tuning.confidenceWeight + tuning.confidenceWeight * c.confidence / 1000) + tuning.recencyWeight * recency
      return { seq: c.seq, family: c.family, score, bm25, fingerprint, recency }
    })
    scored.sort((a, b) => b.score - a.score || a.seq - b.seq)
    if (options.expand === true && matchPlan !== undefined) expand(scored, queryTerms, params, limit)
    // near-duplicates flagged at ingest collapse into their best-scoring member, so repeated text
    // does not crowd out everything else
    const families = new Set<string>()
    const distinct = scored.filter((s) => {
      if (!tuning.collapseNearDuplicates) return true
      if (families.has(s.family)) return false
      families.add(s.family)
      return true
    })

    const hits: RecallHit[] = []
    const top = distinct.slice(0, limit)
    const rows = new Map(rowsBySeq.all(JSON.stringify(top.map((s) => s.seq))).map((row) => [row.seq, row]))
    for (const s of top) {
      const row = rows.get(s.seq) as HitRow
      hits.push({
        id: row.id,
        key: row.key,
        content: row.content,
        score: Math.round(s.score * 10000) / 10000,
        author: row.author,
        version: row.version,
        signatureValid: provenanceValid(row, options.verifySignatures === true),
        kind: row.kind,
        topic: row.topic,
        tags: tagsOfColumn(row.tags),
        visibility: VISIBILITIES[row.visibility],
        confidence: row.confidence / 1000,
        source: row.source,
        teamId: row.team_id,
        validFrom: isoTime(row.valid_from),
        validTo: isoTime(row.valid_to),
        recordedAt: isoTime(row.recorded_at),
        supersededAt: isoTime(row.superseded_at),
        signals: { bm25: round4(s.bm25), fingerprint: round4(s.fingerprint), recency: round4(s.recency) }
      })
    }
    return { hits }
  }

  return { recall }
}

function round4 (value: number): number {
  return Math.round(value * 10000) / 10000
}
