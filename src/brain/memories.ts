/**
 * Memories: write path (remember, bulk ingest, signed records from elsewhere), retraction and
 * history. Nothing is overwritten: an update is a new signed version that supersedes the old one,
 * forgetting writes a signed retraction; only the derived columns of the older row change.
 */
import type { Statement } from 'better-sqlite3'
import { InvalidInputError } from '../util/index.ts'
import { LOG_OP, rowDigest } from './chain.ts'
import type { BrainContext } from './context.ts'
import { NotFoundError } from './errors.ts'
import { BAND_LIST_SQL, bandKeys, fingerprintFromBlob, fingerprintToBlob, jaccard, minhash, shingleSetOfTerms } from './fingerprint.ts'
import { encodeRecord, seal, signatureContext, toMilli, type MemoryRecord, type RetractionRecord, type Sealed, type Unsigned } from './records.ts'
import { memoryLocal, memoryOfRow, retractionLocal, retractionOfRow, type MemoryRow, type RetractionRow } from './rows.ts'
import { isStopTerm, terms } from './text.ts'
import type { Memory, RememberInput, RememberResult, Retraction, Source } from './types.ts'
import { checkLabel, checkMemoryInput, visibilityLevel, type CheckedMemoryInput } from './validate.ts'

/** Shingle Jaccard at or above which a new memory is flagged as a near-duplicate. */
export const NEAR_DUPLICATE_THRESHOLD = 0.8
const MAX_DUPLICATE_CANDIDATES = 16
/** A bulk write of at least this many memories loads the band filter (see band-filter.ts). */
const BAND_FILTER_MIN_BULK = 1000

export interface LocalMeta {
  source: Source
  teamId: string | null
}

export interface StoredMemory {
  row: MemoryRow
  created: boolean
  nearDuplicate: { id: string, similarity: number } | null
}

/** A memory's planned write: nothing (`unchanged` is the current row) or this record. */
type Planned = { unchanged: MemoryRow, unsigned?: undefined } | { unsigned: Unsigned<MemoryRecord> }

const LOCAL: LocalMeta = { source: 'local', teamId: null }

export interface BulkResult {
  created: number
  unchanged: number
  ids: string[]
}

export interface Memories {
  remember: (input: RememberInput) => RememberResult
  /** Ingests many memories in transactions of `batchSize`; `onBatch` runs after each commit. */
  rememberMany: (inputs: Iterable<RememberInput>, options?: { batchSize?: number, onBatch?: (committed: number) => void }) => BulkResult
  /** Writes an already-validated memory inside the caller's transaction. */
  rememberChecked: (input: CheckedMemoryInput, options?: { skipExactDuplicate?: boolean }) => StoredMemory
  /** Stores a memory record signed elsewhere (import, team); the caller checked the signature. */
  storeSigned: (sealed: Sealed<MemoryRecord>, local: LocalMeta, fresh?: boolean) => StoredMemory
  storeRetraction: (sealed: Sealed<RetractionRecord>, local: LocalMeta) => boolean
  forget: (target: string, reason?: string | null) => Retraction[]
  history: (target: string) => Memory[]
  get: (id: string) => Memory
  rowById: (id: string) => MemoryRow | undefined
  ensureAuthor: (brainId: string, publicKey: Uint8Array) => void
}

function sameAsInput (row: MemoryRow, input: CheckedMemoryInput): boolean {
  return row.content === input.content && row.kind === input.kind && row.topic === input.topic &&
    row.tags === JSON.stringify(input.tags) && row.visibility === visibilityLevel(input.visibility) &&
    row.confidence === toMilli(input.confidence) && row.valid_to === input.validTo &&
    (input.validFrom === undefined || input.validFrom === row.valid_from)
}

/** The text the `meta` column of the full-text index gets: key, topic and tags as terms. */
export function metaTerms (key: string | null, topic: string | null, tags: string[]): string {
  return terms([key ?? '', topic ?? '', ...tags].join(' ')).join(' ')
}

export function createMemories (ctx: BrainContext): Memories {
  const { db, identity } = ctx
  const me = identity.brainId

  // positional parameters: binding 24 named ones costs a property look-up each, per row
  const MEMORY_COLUMNS = ['id', 'author', 'key', 'content', 'kind', 'topic', 'tags', 'visibility', 'confidence', 'valid_from',
    'valid_to', 'created_at', 'supersedes', 'version', 'signature', 'source', 'team_id', 'recorded_at', 'duplicate_of',
    'fingerprint', 'superseded_by', 'superseded_at', 'valid_end', 'retracted_at'] as const
  const insertRow: Statement = db.prepare(`INSERT INTO memories (${MEMORY_COLUMNS.join(', ')}) VALUES (${MEMORY_COLUMNS.map(() => '?').join(', ')})`)
  // no DISTINCT (it costs a temporary b-tree per call): duplicates are dropped in candidatesFor
  const bandCandidates = db.prepare<number[], { seq: number, id: string, fingerprint: Buffer }>(`SELECT m.seq, m.id, m.fingerprint
    FROM fingerprint_bands b JOIN memories m ON m.seq = b.memory
    WHERE b.band IN (${BAND_LIST_SQL}) AND m.retracted_at IS NULL LIMIT ${MAX_DUPLICATE_CANDIDATES}`)
  const candidateBySeq = db.prepare<[number], { seq: number, id: string, fingerprint: Buffer }>('SELECT seq, id, fingerprint FROM memories WHERE seq = ? AND retracted_at IS NULL')
  const bySeq = db.prepare<[number], MemoryRow>('SELECT * FROM memories WHERE seq = ?')
  const byId = db.prepare<[string], MemoryRow>('SELECT * FROM memories WHERE id = ?')
  const latestByKey = db.prepare<[string, string], MemoryRow>('SELECT * FROM memories WHERE author = ? AND key = ? ORDER BY seq DESC LIMIT 1')
  const versionsByKey = db.prepare<[string, string], MemoryRow>('SELECT * FROM memories WHERE author = ? AND key = ? ORDER BY seq')
  const bySupersedes = db.prepare<[string], MemoryRow>('SELECT * FROM memories WHERE supersedes = ? ORDER BY seq')
  const firstSuccessor = db.prepare<[string], { id: string, recorded_at: number, valid_from: number }>('SELECT id, recorded_at, valid_from FROM memories WHERE supersedes = ? ORDER BY seq LIMIT 1')
  const firstRetraction = db.prepare<[string], { recorded_at: number }>('SELECT recorded_at FROM retractions WHERE target = ? ORDER BY seq LIMIT 1')
  const markSuperseded: Statement = db.prepare(`UPDATE memories SET superseded_by = @by, superseded_at = MAX(recorded_at, @at),
    valid_end = CASE WHEN valid_to IS NOT NULL AND valid_to < @valid_from THEN valid_to ELSE @valid_from END
    WHERE id = @id AND superseded_by IS NULL`)
  const insertRetraction: Statement = db.prepare(`INSERT INTO retractions (id, author, target, target_type, reason, created_at, signature, source, team_id, recorded_at)
    VALUES (@id, @author, @target, @target_type, @reason, @created_at, @signature, @source, @team_id, @recorded_at)`)
  const retractionById = db.prepare<[string], RetractionRow>('SELECT * FROM retractions WHERE id = ?')
  const retractionsOf = db.prepare<[string], RetractionRow>('SELECT * FROM retractions WHERE target = ? ORDER BY seq')
  const markMemoryRetracted: Statement = db.prepare('UPDATE memories SET retracted_at = MAX(recorded_at, ?) WHERE id = ? AND retracted_at IS NULL')
  const markRelationRetracted: Statement = db.prepare('UPDATE relations SET retracted_at = MAX(recorded_at, ?) WHERE id = ? AND retracted_at IS NULL')
  const relationExists = db.prepare<[string], { seq: number }>('SELECT seq FROM relations WHERE id = ?')
  const insertAuthor: Statement = db.prepare('INSERT OR IGNORE INTO authors (id, public_key) VALUES (?, ?)')
  const knownAuthors = new Set<string>()

  function ensureAuthor (brainId: string, publicKey: Uint8Array): void {
    if (knownAuthors.has(brainId)) return
    insertAuthor.run(brainId, publicKey)
    knownAuthors.add(brainId)
  }

  /** Memories sharing an LSH band: those indexed, and those still queued for the index. */
  function candidatesFor (bands: number[]): Array<{ seq: number, id: string, fingerprint: Buffer }> {
    // most memories share no band with any other: the band filter says so without SQL
    if (!ctx.indexer.mayHoldAnyBand(bands)) return []
    const found = new Map<number, { seq: number, id: string, fingerprint: Buffer }>()
    for (const candidate of bandCandidates.all(...bands)) found.set(candidate.seq, candidate)
    for (const seq of ctx.indexer.queuedBandMatches(bands)) {
      if (found.has(seq)) continue
      const candidate = candidateBySeq.get(seq)
      if (candidate !== undefined) found.set(seq, candidate)
    }
    return [...found.values()]
  }

  function nearDuplicateOf (fingerprint: Uint32Array, bands: number[], exclude: string | null): { id: string, similarity: number } | null {
    let best: { id: string, similarity: number } | null = null
    for (const candidate of candidatesFor(bands)) {
      if (candidate.id === exclude) continue
      const similarity = jaccard(fingerprint, fingerprintFromBlob(candidate.fingerprint))
      if (similarity >= NEAR_DUPLICATE_THRESHOLD && (best === null || similarity > best.similarity)) best = { id: candidate.id, similarity: Math.round(similarity * 1000) / 1000 }
    }
    return best
  }

  /** `fresh`: the record was just made here, so nothing can have superseded or retracted it yet. */
  function storeSigned (sealed: Sealed<MemoryRecord>, local: LocalMeta, fresh = false): StoredMemory {
    const existing = byId.get(sealed.id)
    if (existing !== undefined) return { row: existing, created: false, nearDuplicate: null }
    const { record } = sealed
    const recordedAt = ctx.now()
    const termList = terms(record.content)
    const fingerprint = shingleSetOfTerms(termList.filter((t) => !isStopTerm(t)))
    const bands = fingerprint.length > 0 ? bandKeys(minhash(fingerprint)) : null
    const nearDuplicate = bands === null ? null : nearDuplicateOf(fingerprint, bands, record.supersedes)
    // a successor or retraction may have arrived first (imports and team sync are not ordered)
    const successor = fresh ? undefined : firstSuccessor.get(sealed.id)
    const retraction = fresh ? undefined : firstRetraction.get(sealed.id)
    const row: MemoryRow = {
      seq: 0,
      id: sealed.id,
      author: record.author,
      key: record.key,
      content: record.content,
      kind: record.kind,
      topic: record.topic,
      tags: JSON.stringify(record.tags),
      visibility: visibilityLevel(record.visibility),
      confidence: record.confidence,
      valid_from: record.valid_from,
      valid_to: record.valid_to,
      created_at: record.created_at,
      supersedes: record.supersedes,
      version: record.version,
      signature: Buffer.from(sealed.signature),
      source: local.source,
      team_id: local.teamId,
      recorded_at: recordedAt,
      duplicate_of: nearDuplicate?.id ?? null,
      fingerprint: fingerprintToBlob(fingerprint),
      superseded_by: successor?.id ?? null,
      superseded_at: successor === undefined ? null : recordedAt,
      valid_end: successor === undefined ? record.valid_to : (record.valid_to !== null && record.valid_to < successor.valid_from ? record.valid_to : successor.valid_from),
      retracted_at: retraction === undefined ? null : recordedAt
    }
    const seq = Number(insertRow.run(MEMORY_COLUMNS.map((column) => row[column])).lastInsertRowid)
    row.seq = seq
    ctx.indexer.queue(seq, termList.join(' '), metaTerms(record.key, record.topic, record.tags), bands)
    if (record.supersedes !== null) {
      markSuperseded.run({ by: sealed.id, at: recordedAt, valid_from: record.valid_from, id: record.supersedes })
    }
    ctx.chain.append(LOG_OP.memory, seq, rowDigest(sealed.bytes, sealed.signature, memoryLocal(row)), recordedAt)
    return { row, created: true, nearDuplicate }
  }

  /** An unkeyed memory of this brain with exactly this content, kind and topic, if one is current. */
  function exactDuplicate (input: CheckedMemoryInput): MemoryRow | undefined {
    const fingerprint = shingleSetOfTerms(terms(input.content).filter((t) => !isStopTerm(t)))
    if (fingerprint.length === 0) return undefined
    for (const candidate of candidatesFor(bandKeys(minhash(fingerprint)))) {
      const row = bySeq.get(candidate.seq)
      if (row !== undefined && row.author === me && row.key === null && row.content === input.content && row.kind === input.kind &&
        row.topic === input.topic && row.superseded_by === null) return row
    }
    return undefined
  }

  /**
   * What remembering `input` writes: nothing (an unchanged current version, an exact duplicate)
   * or a new record, encoded but not signed yet.
   */
  function plan (input: CheckedMemoryInput, options: { skipExactDuplicate?: boolean } = {}): Planned {
    if (options.skipExactDuplicate === true && input.key === null) {
      const duplicate = exactDuplicate(input)
      if (duplicate !== undefined) return { unchanged: duplicate }
    }
    const now = ctx.now()
    let supersedes: string | null = null
    let version = 1
    if (input.key !== null) {
      const latest = latestByKey.get(me, input.key)
      if (latest !== undefined) {
        if (latest.retracted_at === null && latest.superseded_by === null) {
          if (sameAsInput(latest, input)) return { unchanged: latest }
          supersedes = latest.id
        }
        version = latest.version + 1
      }
    }
    const record: MemoryRecord = {
      record: 'memory',
      v: 1,
      author: me,
      key: input.key,
      content: input.content,
      kind: input.kind,
      topic: input.topic,
      tags: input.tags,
      visibility: input.visibility,
      confidence: toMilli(input.confidence),
      valid_from: input.validFrom ?? now,
      valid_to: input.validTo,
      created_at: now,
      supersedes,
      version
    }
    if (record.valid_to !== null && record.valid_to <= record.valid_from) throw new InvalidInputError('validTo must be after validFrom')
    return { unsigned: encodeRecord(record) }
  }

  function rememberChecked (input: CheckedMemoryInput, options: { skipExactDuplicate?: boolean } = {}): StoredMemory {
    const planned = plan(input, options)
    if (planned.unsigned === undefined) return { row: planned.unchanged, created: false, nearDuplicate: null }
    const { unsigned } = planned
    return storeSigned({ ...unsigned, signature: identity.sign(signatureContext(unsigned.record), unsigned.bytes) }, LOCAL, true)
  }

  /**
   * Remembers a run of inputs inside the caller's transaction, signing on the pool while storing.
   * Records are planned ahead of storing, which is only equivalent to one at a time while no key
   * repeats: an input whose key an earlier planned input has waits for that one to be stored.
   */
  function rememberRun (inputs: CheckedMemoryInput[]): StoredMemory[] {
    const out: StoredMemory[] = []
    let next = 0
    while (next < inputs.length) {
      const keys = new Set<string>()
      const planned: Planned[] = []
      for (; next < inputs.length; next++) {
        const key = inputs[next].key
        if (key !== null) {
          if (keys.has(key)) break
          keys.add(key)
        }
        planned.push(plan(inputs[next]))
      }
      const toSign: Array<Unsigned<MemoryRecord>> = []
      for (const p of planned) if (p.unsigned !== undefined) toSign.push(p.unsigned)
      const signatures = ctx.signBatch(toSign.map((u) => ({ context: signatureContext(u.record), bytes: u.bytes })))
      let signed = 0
      for (const p of planned) {
        if (p.unsigned === undefined) out.push({ row: p.unchanged, created: false, nearDuplicate: null })
        else out.push(storeSigned({ ...p.unsigned, signature: signatures.signature(signed++) }, LOCAL, true))
      }
    }
    return out
  }

  function storeRetraction (sealed: Sealed<RetractionRecord>, local: LocalMeta): boolean {
    if (retractionById.get(sealed.id) !== undefined) return false
    const recordedAt = ctx.now()
    const { record } = sealed
    const row = {
      id: sealed.id,
      author: record.author,
      target: record.target,
      target_type: record.target_type,
      reason: record.reason,
      created_at: record.created_at,
      signature: Buffer.from(sealed.signature),
      source: local.source,
      team_id: local.teamId,
      recorded_at: recordedAt
    }
    const seq = Number(insertRetraction.run(row).lastInsertRowid)
    if (record.target_type === 'memory') markMemoryRetracted.run(recordedAt, record.target)
    else markRelationRetracted.run(recordedAt, record.target)
    ctx.chain.append(LOG_OP.retraction, seq, rowDigest(sealed.bytes, sealed.signature, retractionLocal(row)), recordedAt)
    return true
  }

  function retract (target: string, targetType: 'memory' | 'relation', reason: string | null): Retraction {
    const previous = retractionsOf.all(target)
    if (previous.length > 0) return retractionOfRow(previous[0])
    const record: RetractionRecord = { record: 'retraction', v: 1, author: me, target, target_type: targetType, reason, created_at: ctx.now() }
    const sealed = seal(identity, record)
    storeRetraction(sealed, { source: 'local', teamId: null })
    return retractionOfRow(retractionById.get(sealed.id) as RetractionRow)
  }

  function forget (target: string, reason?: string | null): Retraction[] {
    const checkedTarget = checkLabel(target, ctx.limits.keyBytes, 'memory id or key')
    const why = reason == null ? null : checkLabel(reason, ctx.limits.topicBytes * 4, 'reason')
    return ctx.write(() => {
      const row = byId.get(checkedTarget)
      if (row !== undefined) return [retract(row.id, 'memory', why)]
      if (relationExists.get(checkedTarget) !== undefined) return [retract(checkedTarget, 'relation', why)]
      const versions = versionsByKey.all(me, checkedTarget).filter((v) => v.retracted_at === null)
      if (versions.length === 0) throw new NotFoundError(`no memory with id or key ${JSON.stringify(checkedTarget)}`)
      return versions.map((v) => retract(v.id, 'memory', why))
    })
  }

  function history (target: string): Memory[] {
    const checkedTarget = checkLabel(target, ctx.limits.keyBytes, 'memory id or key')
    const row = byId.get(checkedTarget)
    let rows: MemoryRow[]
    if (row === undefined) {
      rows = versionsByKey.all(me, checkedTarget)
    } else if (row.key !== null) {
      rows = versionsByKey.all(row.author, row.key)
    } else {
      // an unkeyed memory: follow supersedes links both ways
      const chain = new Map<string, MemoryRow>([[row.id, row]])
      let back: MemoryRow | undefined = row
      while (back?.supersedes != null && !chain.has(back.supersedes)) {
        back = byId.get(back.supersedes)
        if (back !== undefined) chain.set(back.id, back)
      }
      const queue = [row.id]
      while (queue.length > 0) {
        for (const next of bySupersedes.all(queue.pop() as string)) {
          if (!chain.has(next.id)) { chain.set(next.id, next); queue.push(next.id) }
        }
      }
      rows = [...chain.values()].sort((a, b) => a.seq - b.seq)
    }
    if (rows.length === 0) throw new NotFoundError(`no memory with id or key ${JSON.stringify(checkedTarget)}`)
    return rows.map(memoryOfRow)
  }

  function remember (input: RememberInput): RememberResult {
    const checked = checkMemoryInput(input, ctx.limits)
    const stored = ctx.write(() => rememberChecked(checked))
    return { memory: memoryOfRow(stored.row), created: stored.created, nearDuplicate: stored.nearDuplicate }
  }

  function rememberMany (inputs: Iterable<RememberInput>, options: { batchSize?: number, onBatch?: (committed: number) => void } = {}): BulkResult {
    const batchSize = options.batchSize ?? ctx.limits.importBatchSize
    const result: BulkResult = { created: 0, unchanged: 0, ids: [] }
    // validate everything before writing anything: a bad input fails the call with nothing written
    const checked = Array.from(inputs, (input) => checkMemoryInput(input, ctx.limits))
    for (let start = 0; start < checked.length; start += batchSize) {
      // loading the band filter scans every band once; worth it for a bulk write, not for a few
      if (checked.length >= BAND_FILTER_MIN_BULK) ctx.indexer.useBandFilter(checked.length - start)
      const stored = ctx.write(() => {
        const written = rememberRun(checked.slice(start, start + batchSize))
        ctx.indexer.flushWithin()
        return written
      })
      for (const s of stored) {
        if (s.created) result.created++
        else result.unchanged++
        result.ids.push(s.row.id)
      }
      options.onBatch?.(result.ids.length)
    }
    return result
  }

  return {
    remember,
    rememberMany,
    rememberChecked,
    storeSigned,
    storeRetraction,
    forget,
    history,
    get (id) {
      const row = byId.get(id)
      if (row === undefined) throw new NotFoundError(`no memory with id ${JSON.stringify(id)}`)
      return memoryOfRow(row)
    },
    rowById: (id) => byId.get(id),
    ensureAuthor
  }
}
