/**
 * The knowledge graph: typed entities with aliases, and signed relations between them with
 * provenance (asserting brain, source memory) and valid time. Single-valued predicates keep one
 * current object per subject: a newer value supersedes the older (never deletes it).
 * Names resolve exactly, then case/diacritic-insensitively, then (for look-ups only) fuzzily
 * through a trigram index scored by edit distance.
 */
import type { Statement } from 'better-sqlite3'
import { InvalidInputError } from '../util/index.ts'
import { LOG_OP, rowDigest } from './chain.ts'
import type { BrainContext } from './context.ts'
import { AmbiguousEntityError, NotFoundError } from './errors.ts'
import { ftsString } from './recall.ts'
import { canonicalBytes, entityId, fromMilli, seal, toMilli, type EntityKey, type RelationRecord, type Sealed } from './records.ts'
import { parseOptionalTime, isoTime } from './time.ts'
import { foldText } from './text.ts'
import type { Entity, EntityRef, Relation, RelateInput, RelateResult, Source } from './types.ts'
import { checkConfidence, checkLabel } from './validate.ts'
import type { LocalMeta } from './memories.ts'

export interface EntityRow {
  seq: number
  id: string
  type: string
  name: string
  recorded_at: number
}

export interface RelationRow {
  seq: number
  id: string
  author: string
  subject: number
  predicate: string
  object: number
  confidence: number
  valid_from: number
  valid_to: number | null
  created_at: number
  source_memory: string | null
  signature: Buffer
  source: Source
  team_id: string | null
  recorded_at: number
  superseded_by: string | null
  superseded_at: number | null
  valid_end: number | null
  retracted_at: number | null
}

const FUZZY_MIN_SIMILARITY = 0.75
const FUZZY_CANDIDATES = 24

export function entityDigest (row: EntityRow): Buffer {
  return rowDigest(canonicalBytes({ record: 'entity', v: 1, type: row.type, name: row.name }), null, { recorded_at: row.recorded_at })
}

export function aliasDigest (entity: string, alias: string, folded: string, recordedAt: number): Buffer {
  return rowDigest(canonicalBytes({ record: 'alias', v: 1, entity, alias, folded }), null, { recorded_at: recordedAt })
}

export function relationLocal (row: { source: string, team_id: string | null, recorded_at: number }): object {
  return { source: row.source, team_id: row.team_id, recorded_at: row.recorded_at }
}

/** Similarity 0..1 from the Levenshtein distance of two strings. */
export function editSimilarity (a: string, b: string): number {
  if (a === b) return 1
  const longest = Math.max(a.length, b.length)
  if (longest === 0) return 1
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return 1 - previous[b.length] / longest
}

export interface Graph {
  relate: (input: RelateInput) => RelateResult
  /** Relates in transactions of `batchSize`; a failing input rolls back only its own batch. */
  relateMany: (inputs: Iterable<RelateInput>, options?: { batchSize?: number, onBatch?: (committed: number) => void }) => { created: number, unchanged: number }
  addAlias: (entity: string | EntityRef, alias: string) => Entity
  /** Finds an entity by name or alias: exact, then folded, then (when `fuzzy`) fuzzy. */
  resolve: (ref: string | EntityRef, fuzzy?: boolean) => EntityRow | undefined
  /** Like resolve but throws NotFoundError. */
  entity: (ref: string | EntityRef) => EntityRow
  entityOf: (row: EntityRow) => Entity
  entityBySeq: (seq: number) => EntityRow
  relationOf: (row: RelationRow) => Relation
  storeSignedRelation: (sealed: Sealed<RelationRecord>, local: LocalMeta) => { row: RelationRow, created: boolean, superseded: string[] }
  ensureEntity: (key: EntityKey) => EntityRow
  relationRecordOfRow: (row: RelationRow) => RelationRecord
  relationById: (id: string) => RelationRow | undefined
  listEntities: () => Entity[]
}

export function createGraph (ctx: BrainContext): Graph {
  const { db, ontology, limits } = ctx
  const entityById = db.prepare<[string], EntityRow>('SELECT * FROM entities WHERE id = ?')
  const entityBySeqStmt = db.prepare<[number], EntityRow>('SELECT * FROM entities WHERE seq = ?')
  const insertEntity: Statement = db.prepare('INSERT INTO entities (id, type, name, recorded_at) VALUES (?, ?, ?, ?)')
  const insertAlias: Statement = db.prepare('INSERT OR IGNORE INTO aliases (entity, alias, folded, recorded_at) VALUES (?, ?, ?, ?)')
  const insertTrigrams: Statement = db.prepare('INSERT INTO alias_trigrams (rowid, folded) VALUES (?, ?)')
  const aliasesOf = db.prepare<[number], { alias: string }>('SELECT alias FROM aliases WHERE entity = ? ORDER BY seq')
  const byAlias = db.prepare<[string], EntityRow>('SELECT DISTINCT e.* FROM aliases a JOIN entities e ON e.seq = a.entity WHERE a.alias = ?')
  const byFolded = db.prepare<[string], EntityRow>('SELECT DISTINCT e.* FROM aliases a JOIN entities e ON e.seq = a.entity WHERE a.folded = ?')
  const trigramCandidates = db.prepare<[string], { seq: number, entity: number, folded: string }>(`SELECT a.seq, a.entity, a.folded FROM alias_trigrams t
    JOIN aliases a ON a.seq = t.rowid WHERE alias_trigrams MATCH ? ORDER BY t.rank LIMIT ${FUZZY_CANDIDATES}`)
  const insertRelation: Statement = db.prepare(`INSERT INTO relations (id, author, subject, predicate, object, confidence, valid_from,
    valid_to, created_at, source_memory, signature, source, team_id, recorded_at, superseded_by, superseded_at, valid_end, retracted_at)
    VALUES (@id, @author, @subject, @predicate, @object, @confidence, @valid_from, @valid_to, @created_at, @source_memory,
    @signature, @source, @team_id, @recorded_at, @superseded_by, @superseded_at, @valid_end, @retracted_at)`)
  const relationByIdStmt = db.prepare<[string], RelationRow>('SELECT * FROM relations WHERE id = ?')
  const currentBySubjectPredicate = db.prepare<[number, string], RelationRow>(`SELECT * FROM relations
    WHERE subject = ? AND predicate = ? AND superseded_by IS NULL AND retracted_at IS NULL ORDER BY seq`)
  const markSuperseded: Statement = db.prepare(`UPDATE relations SET superseded_by = @by, superseded_at = MAX(recorded_at, @at),
    valid_end = CASE WHEN valid_to IS NOT NULL AND valid_to < @valid_from THEN valid_to ELSE MAX(valid_from, @valid_from) END
    WHERE id = @id AND superseded_by IS NULL`)
  const firstRetraction = db.prepare<[string], { recorded_at: number }>('SELECT recorded_at FROM retractions WHERE target = ? ORDER BY seq LIMIT 1')
  const memoryExists = db.prepare<[string], { seq: number }>('SELECT seq FROM memories WHERE id = ?')
  const allEntities = db.prepare<[], EntityRow>('SELECT * FROM entities ORDER BY seq')

  function addAliasRow (entity: EntityRow, alias: string): void {
    const folded = foldText(alias)
    const recordedAt = ctx.now()
    const result = insertAlias.run(entity.seq, alias, folded, recordedAt)
    if (result.changes === 0) return
    const seq = Number(result.lastInsertRowid)
    insertTrigrams.run(seq, folded)
    ctx.chain.append(LOG_OP.alias, seq, aliasDigest(entity.id, alias, folded, recordedAt), recordedAt)
  }

  function ensureEntity (key: EntityKey): EntityRow {
    ontology.checkType(key.type)
    const name = checkLabel(key.name, limits.entityNameBytes, 'entity name')
    const id = entityId(key.type, name)
    const existing = entityById.get(id)
    if (existing !== undefined) return existing
    const recordedAt = ctx.now()
    const seq = Number(insertEntity.run(id, key.type, name, recordedAt).lastInsertRowid)
    const row: EntityRow = { seq, id, type: key.type, name, recorded_at: recordedAt }
    ctx.chain.append(LOG_OP.entity, seq, entityDigest(row), recordedAt)
    addAliasRow(row, name)
    return row
  }

  function pick (rows: EntityRow[], name: string, type: string | undefined): EntityRow | undefined {
    const fitting = type === undefined ? rows : rows.filter((r) => r.type === type)
    if (fitting.length > 1) throw new AmbiguousEntityError(name, fitting.map((r) => `${r.name} (${r.type})`))
    return fitting[0]
  }

  function resolve (ref: string | EntityRef, fuzzy = true): EntityRow | undefined {
    const name = checkLabel(typeof ref === 'string' ? ref : ref.name, limits.entityNameBytes, 'entity name')
    const type = typeof ref === 'string' ? undefined : ref.type
    if (type !== undefined) ontology.checkType(type)
    const exact = pick(byAlias.all(name), name, type)
    if (exact !== undefined) return exact
    const folded = foldText(name)
    const insensitive = pick(byFolded.all(folded), name, type)
    if (insensitive !== undefined || !fuzzy) return insensitive
    const chars = [...folded]
    if (chars.length < 3) return undefined
    const trigrams = new Set<string>()
    for (let i = 0; i + 3 <= chars.length; i++) trigrams.add(chars.slice(i, i + 3).join(''))
    const bestByEntity = new Map<number, number>()
    for (const candidate of trigramCandidates.all([...trigrams].map(ftsString).join(' OR '))) {
      const similarity = editSimilarity(folded, candidate.folded)
      if (similarity >= FUZZY_MIN_SIMILARITY && similarity > (bestByEntity.get(candidate.entity) ?? 0)) bestByEntity.set(candidate.entity, similarity)
    }
    let ranked = [...bestByEntity.entries()].map(([seq, similarity]) => ({ row: entityBySeqStmt.get(seq) as EntityRow, similarity }))
    if (type !== undefined) ranked = ranked.filter((r) => r.row.type === type)
    ranked.sort((a, b) => b.similarity - a.similarity)
    if (ranked.length === 0) return undefined
    const top = ranked.filter((r) => r.similarity === ranked[0].similarity)
    if (top.length > 1) throw new AmbiguousEntityError(name, top.map((r) => `${r.row.name} (${r.row.type})`))
    return top[0].row
  }

  function entity (ref: string | EntityRef): EntityRow {
    const found = resolve(ref, true)
    if (found === undefined) throw new NotFoundError(`no entity named ${JSON.stringify(typeof ref === 'string' ? ref : ref.name)}`)
    return found
  }

  function entityOf (row: EntityRow): Entity {
    return { id: row.id, type: row.type, name: row.name, aliases: aliasesOf.all(row.seq).map((a) => a.alias).filter((a) => a !== row.name) }
  }

  function entityBySeq (seq: number): EntityRow {
    const row = entityBySeqStmt.get(seq)
    if (row === undefined) throw new NotFoundError(`no entity #${seq}`)
    return row
  }

  function relationRecordOfRow (row: RelationRow): RelationRecord {
    const subject = entityBySeq(row.subject)
    const object = entityBySeq(row.object)
    return {
      record: 'relation',
      v: 1,
      author: row.author,
      subject: { type: subject.type, name: subject.name },
      predicate: row.predicate,
      object: { type: object.type, name: object.name },
      confidence: row.confidence,
      valid_from: row.valid_from,
      valid_to: row.valid_to,
      created_at: row.created_at,
      source_memory: row.source_memory
    }
  }

  function relationOf (row: RelationRow): Relation {
    return {
      id: row.id,
      subject: entityOf(entityBySeq(row.subject)),
      predicate: row.predicate,
      object: entityOf(entityBySeq(row.object)),
      confidence: fromMilli(row.confidence),
      author: row.author,
      source: row.source,
      teamId: row.team_id,
      sourceMemory: row.source_memory,
      validFrom: isoTime(row.valid_from),
      validTo: isoTime(row.valid_to),
      validEnd: isoTime(row.valid_end),
      createdAt: isoTime(row.created_at),
      recordedAt: isoTime(row.recorded_at),
      supersededBy: row.superseded_by,
      supersededAt: isoTime(row.superseded_at),
      retractedAt: isoTime(row.retracted_at)
    }
  }

  function storeSignedRelation (sealed: Sealed<RelationRecord>, local: LocalMeta): { row: RelationRow, created: boolean, superseded: string[] } {
    const existing = relationByIdStmt.get(sealed.id)
    if (existing !== undefined) return { row: existing, created: false, superseded: [] }
    const { record } = sealed
    const rule = ontology.predicate(record.predicate)
    ontology.checkRelation(record.subject.type, rule, record.object.type)
    const subject = ensureEntity(record.subject)
    const object = ensureEntity(record.object)
    const recordedAt = ctx.now()
    const row: RelationRow = {
      seq: 0,
      id: sealed.id,
      author: record.author,
      subject: subject.seq,
      predicate: record.predicate,
      object: object.seq,
      confidence: record.confidence,
      valid_from: record.valid_from,
      valid_to: record.valid_to,
      created_at: record.created_at,
      source_memory: record.source_memory,
      signature: Buffer.from(sealed.signature),
      source: local.source,
      team_id: local.teamId,
      recorded_at: recordedAt,
      superseded_by: null,
      superseded_at: null,
      valid_end: record.valid_to,
      retracted_at: firstRetraction.get(sealed.id) === undefined ? null : recordedAt
    }
    const superseded: string[] = []
    if (rule.single) {
      for (const current of currentBySubjectPredicate.all(subject.seq, record.predicate)) {
        if (current.valid_from <= record.valid_from) {
          superseded.push(current.id)
        } else if (row.superseded_by === null) {
          // the new value is older in the world than the current one: it is history from the start
          row.superseded_by = current.id
          row.superseded_at = recordedAt
          row.valid_end = record.valid_to !== null && record.valid_to < current.valid_from ? record.valid_to : current.valid_from
        }
      }
    }
    row.seq = Number(insertRelation.run(row).lastInsertRowid)
    for (const id of superseded) markSuperseded.run({ by: sealed.id, at: recordedAt, valid_from: record.valid_from, id })
    ctx.chain.append(LOG_OP.relation, row.seq, rowDigest(sealed.bytes, sealed.signature, relationLocal(row)), recordedAt)
    return { row, created: true, superseded }
  }

  function endpoint (ref: string | EntityRef, implied: string | undefined, side: string): EntityRow {
    const name = typeof ref === 'string' ? ref : ref.name
    const type = typeof ref === 'string' ? undefined : ref.type
    const found = resolve(type === undefined ? name : { name, type }, false)
    if (found !== undefined) return found
    const newType = type ?? implied
    if (newType === undefined) throw new InvalidInputError(`unknown ${side} entity ${JSON.stringify(name)}: give its type (one of ${ontology.types.join(', ')})`)
    return ensureEntity({ type: newType, name })
  }

  function relate (input: RelateInput): RelateResult {
    if (input == null || typeof input !== 'object') throw new InvalidInputError('a relation needs { subject, predicate, object }')
    const rule = ontology.predicate(typeof input.predicate === 'string' ? input.predicate.trim() : String(input.predicate))
    const confidence = checkConfidence(input.confidence)
    const validFromInput = parseOptionalTime(input.validFrom, 'validFrom')
    const validTo = parseOptionalTime(input.validTo, 'validTo') ?? null
    const sourceMemory = input.sourceMemory == null ? null : checkLabel(input.sourceMemory, 64, 'source memory id')
    for (const ref of [input.subject, input.object]) {
      const type = typeof ref === 'object' && ref !== null ? ref.type : undefined
      if (type !== undefined) ontology.checkType(type)
    }
    return ctx.write(() => {
      if (sourceMemory !== null && memoryExists.get(sourceMemory) === undefined) throw new NotFoundError(`no memory with id ${JSON.stringify(sourceMemory)}`)
      const subject = endpoint(input.subject, ontology.impliedType(rule, 'domain'), 'subject')
      const object = endpoint(input.object, ontology.impliedType(rule, 'range'), 'object')
      ontology.checkRelation(subject.type, rule, object.type)
      const now = ctx.now()
      const validFrom = validFromInput ?? now
      if (validTo !== null && validTo <= validFrom) throw new InvalidInputError('validTo must be after validFrom')
      const current = currentBySubjectPredicate.all(subject.seq, rule.name).find((r) => r.object === object.seq)
      if (current !== undefined && current.confidence === toMilli(confidence) && current.valid_to === validTo && (validFromInput === undefined || current.valid_from === validFromInput)) {
        return { relation: relationOf(current), created: false, superseded: [] }
      }
      const record: RelationRecord = {
        record: 'relation',
        v: 1,
        author: ctx.identity.brainId,
        subject: { type: subject.type, name: subject.name },
        predicate: rule.name,
        object: { type: object.type, name: object.name },
        confidence: toMilli(confidence),
        valid_from: validFrom,
        valid_to: validTo,
        created_at: now,
        source_memory: sourceMemory
      }
      const stored = storeSignedRelation(seal(ctx.identity, record), { source: 'local', teamId: null })
      return { relation: relationOf(stored.row), created: stored.created, superseded: stored.superseded }
    })
  }

  function addAlias (ref: string | EntityRef, alias: string): Entity {
    const checked = checkLabel(alias, limits.entityNameBytes, 'alias')
    return ctx.write(() => {
      const row = entity(ref)
      if (aliasesOf.all(row.seq).length >= limits.aliases) throw new InvalidInputError(`an entity has at most ${limits.aliases} aliases`)
      addAliasRow(row, checked)
      return entityOf(row)
    })
  }

  function relateMany (inputs: Iterable<RelateInput>, options: { batchSize?: number, onBatch?: (committed: number) => void } = {}): { created: number, unchanged: number } {
    const batchSize = options.batchSize ?? limits.importBatchSize
    const all = [...inputs]
    // the predicate and the named types are checked up front; entity resolution happens per batch
    for (const input of all) {
      ontology.predicate(input.predicate)
      for (const ref of [input.subject, input.object]) if (typeof ref === 'object' && ref?.type !== undefined) ontology.checkType(ref.type)
    }
    const result = { created: 0, unchanged: 0 }
    for (let start = 0; start < all.length; start += batchSize) {
      const outcomes = ctx.write(() => all.slice(start, start + batchSize).map((input) => relate(input).created))
      for (const created of outcomes) {
        if (created) result.created++
        else result.unchanged++
      }
      options.onBatch?.(result.created + result.unchanged)
    }
    return result
  }

  return {
    relate,
    relateMany,
    addAlias,
    resolve,
    entity,
    entityOf,
    entityBySeq,
    relationOf,
    storeSignedRelation,
    ensureEntity,
    relationRecordOfRow,
    relationById: (id) => relationByIdStmt.get(id),
    listEntities: () => allEntities.all().map(entityOf)
  }
}
