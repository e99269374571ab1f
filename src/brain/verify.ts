/**
 * verify(): walks the audit log and re-derives everything it can.
 * - Each entry's hash must follow from the previous one (an edited or deleted entry breaks it).
 * - The row each entry points at must exist and still hash to the entry's digest, and its id must
 *   still be the hash of its record (edited or deleted rows).
 * - Every row must have an entry (rows inserted behind the engine's back).
 * - Derived columns (superseded_*, valid_end, retracted_at) must match what the records imply.
 * - The head kept in meta must be the last entry (entries cut off the end).
 * With `signatures`, every signed row's Ed25519 signature is checked too.
 */
import { entryHash, formatHead, GENESIS_HASH, LOG_OP, LOG_TABLE, rowDigest, type LogOp } from './chain.ts'
import type { BrainContext } from './context.ts'
import { aliasDigest, entityDigest, relationLocal, type EntityRow, type Graph, type RelationRow } from './graph.ts'
import { canonicalBytes, checkSignature, entityId, recordId, type SignedRecord } from './records.ts'
import { memoryLocal, memoryRecordOfRow, retractionLocal, retractionRecordOfRow, type MemoryRow, type RetractionRow } from './rows.ts'
import type { VerifyProblem, VerifyReport } from './types.ts'

const MAX_PROBLEMS = 1000

interface LogRow { seq: number, op: number, ref: number, digest: Buffer, at: number, hash: Buffer }

export function createVerifier (ctx: BrainContext, graph: Graph): (options?: { signatures?: boolean }) => VerifyReport {
  const { db } = ctx
  const logRows = db.prepare<[], LogRow>('SELECT seq, op, ref, digest, at, hash FROM log ORDER BY seq')
  const rowOf: Record<LogOp, ReturnType<typeof db.prepare>> = {
    1: db.prepare('SELECT * FROM memories WHERE seq = ?'),
    2: db.prepare('SELECT * FROM retractions WHERE seq = ?'),
    3: db.prepare('SELECT * FROM entities WHERE seq = ?'),
    4: db.prepare('SELECT * FROM aliases WHERE seq = ?'),
    5: db.prepare('SELECT * FROM relations WHERE seq = ?')
  }
  const seqsOf: Record<LogOp, ReturnType<typeof db.prepare<[]>>> = {
    1: db.prepare('SELECT seq FROM memories'),
    2: db.prepare('SELECT seq FROM retractions'),
    3: db.prepare('SELECT seq FROM entities'),
    4: db.prepare('SELECT seq FROM aliases'),
    5: db.prepare('SELECT seq FROM relations')
  }
  const headStmt = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE name = 'head'")
  const authorKey = db.prepare<[string], { public_key: Buffer }>('SELECT public_key FROM authors WHERE id = ?')
  const memoryDerived = db.prepare<[], Pick<MemoryRow, 'seq' | 'id' | 'supersedes' | 'recorded_at' | 'valid_from' | 'valid_to' | 'superseded_by' | 'superseded_at' | 'valid_end' | 'retracted_at'>>(
    'SELECT seq, id, supersedes, recorded_at, valid_from, valid_to, superseded_by, superseded_at, valid_end, retracted_at FROM memories ORDER BY seq')
  const relationDerived = db.prepare<[], Pick<RelationRow, 'seq' | 'id' | 'subject' | 'predicate' | 'recorded_at' | 'superseded_by' | 'superseded_at' | 'retracted_at'>>(
    'SELECT seq, id, subject, predicate, recorded_at, superseded_by, superseded_at, retracted_at FROM relations ORDER BY seq')
  const retractionTimes = db.prepare<[], { target: string, recorded_at: number }>('SELECT target, recorded_at FROM retractions ORDER BY seq')

  return (options = {}) => {
    const problems: VerifyProblem[] = []
    const report = (problem: VerifyProblem): void => { if (problems.length < MAX_PROBLEMS) problems.push(problem) }
    const logged: Record<LogOp, Set<number>> = { 1: new Set(), 2: new Set(), 3: new Set(), 4: new Set(), 5: new Set() }

    const checkSigned = (table: string, seq: number, record: SignedRecord, id: string, signature: Buffer, local: object, digest: Buffer): void => {
      const bytes = canonicalBytes(record)
      if (recordId(bytes) !== id) report({ kind: 'row-edited', table, seq, detail: `record ${id} no longer hashes to its id` })
      else if (!rowDigest(bytes, signature, local).equals(digest)) report({ kind: 'row-edited', table, seq, detail: `row of ${id} differs from what was logged` })
      if (options.signatures === true) {
        const key = authorKey.get(record.author)
        const failure = key === undefined ? 'the author key is unknown' : checkSignature(record, bytes, key.public_key, signature)
        if (failure !== undefined) report({ kind: 'bad-signature', table, seq, detail: `${id}: ${failure}` })
      }
    }

    let previous: Buffer = GENESIS_HASH
    let expectedSeq = 1
    let entries = 0
    let last: LogRow | undefined
    for (const entry of logRows.iterate()) {
      entries++
      if (entry.seq !== expectedSeq) report({ kind: 'log-missing', table: 'log', seq: expectedSeq, detail: `log entries ${expectedSeq}..${entry.seq - 1} are missing` })
      const expected = entryHash(previous, entry.seq, entry.op, entry.ref, entry.digest, entry.at)
      if (!expected.equals(entry.hash)) report({ kind: 'chain-broken', table: 'log', seq: entry.seq, detail: 'entry hash does not follow from the previous entry' })
      previous = entry.hash
      expectedSeq = entry.seq + 1
      last = entry
      const op = entry.op as LogOp
      const table = LOG_TABLE[op]
      if (table === undefined) { report({ kind: 'chain-broken', table: 'log', seq: entry.seq, detail: `unknown op ${entry.op}` }); continue }
      logged[op].add(entry.ref)
      const row = rowOf[op].get(entry.ref) as Record<string, unknown> | undefined
      if (row === undefined) { report({ kind: 'row-deleted', table, seq: entry.ref, detail: `row logged at entry ${entry.seq} is gone` }); continue }
      try {
        if (op === LOG_OP.memory) {
          const m = row as unknown as MemoryRow
          checkSigned(table, m.seq, memoryRecordOfRow(m), m.id, m.signature, memoryLocal(m), entry.digest)
        } else if (op === LOG_OP.retraction) {
          const r = row as unknown as RetractionRow
          checkSigned(table, r.seq, retractionRecordOfRow(r), r.id, r.signature, retractionLocal(r), entry.digest)
        } else if (op === LOG_OP.relation) {
          const r = row as unknown as RelationRow
          checkSigned(table, r.seq, graph.relationRecordOfRow(r), r.id, r.signature, relationLocal(r), entry.digest)
        } else if (op === LOG_OP.entity) {
          const e = row as unknown as EntityRow
          if (entityId(e.type, e.name) !== e.id || !entityDigest(e).equals(entry.digest)) report({ kind: 'row-edited', table, seq: e.seq, detail: `entity ${e.name} differs from what was logged` })
        } else {
          const a = row as unknown as { seq: number, entity: number, alias: string, folded: string, recorded_at: number }
          const entityRowId = graph.entityBySeq(a.entity).id
          if (!aliasDigest(entityRowId, a.alias, a.folded, a.recorded_at).equals(entry.digest)) report({ kind: 'row-edited', table, seq: a.seq, detail: `alias ${a.alias} differs from what was logged` })
        }
      } catch (err) {
        report({ kind: 'row-edited', table, seq: entry.ref, detail: `row cannot be read back as a record: ${(err as Error).message}` })
      }
    }

    for (const op of [1, 2, 3, 4, 5] as LogOp[]) {
      for (const { seq } of seqsOf[op].iterate() as unknown as Iterable<{ seq: number }>) {
        if (!logged[op].has(seq)) report({ kind: 'row-unlogged', table: LOG_TABLE[op], seq, detail: 'row has no log entry (written behind the engine\'s back)' })
      }
    }

    const head = headStmt.get()?.value ?? null
    const lastHead = last === undefined ? null : formatHead({ seq: last.seq, hash: last.hash })
    if (head !== lastHead) report({ kind: 'head-mismatch', table: 'meta', seq: null, detail: `recorded head ${head ?? 'none'} but the log ends at ${lastHead ?? 'nothing'}: entries were cut off or added` })

    // derived columns
    const firstRetraction = new Map<string, number>()
    for (const r of retractionTimes.iterate()) if (!firstRetraction.has(r.target)) firstRetraction.set(r.target, r.recorded_at)
    const memories = memoryDerived.all()
    const firstSuccessor = new Map<string, typeof memories[number]>()
    for (const m of memories) if (m.supersedes !== null && !firstSuccessor.has(m.supersedes)) firstSuccessor.set(m.supersedes, m)
    for (const m of memories) {
      const successor = firstSuccessor.get(m.id)
      const retractedAt = firstRetraction.get(m.id)
      const expected = {
        superseded_by: successor?.id ?? null,
        superseded_at: successor === undefined ? null : Math.max(m.recorded_at, successor.recorded_at),
        valid_end: successor === undefined ? m.valid_to : (m.valid_to !== null && m.valid_to < successor.valid_from ? m.valid_to : successor.valid_from),
        retracted_at: retractedAt === undefined ? null : Math.max(m.recorded_at, retractedAt)
      }
      for (const [column, value] of Object.entries(expected)) {
        const actual = (m as Record<string, unknown>)[column]
        if (actual !== value) report({ kind: 'derived-mismatch', table: 'memories', seq: m.seq, detail: `${column} is ${String(actual)}, the records imply ${String(value)}` })
      }
    }
    const relations = relationDerived.all()
    const relationById = new Map(relations.map((r) => [r.id, r]))
    for (const r of relations) {
      const retractedAt = firstRetraction.get(r.id)
      const expectedRetracted = retractedAt === undefined ? null : Math.max(r.recorded_at, retractedAt)
      if (r.retracted_at !== expectedRetracted) report({ kind: 'derived-mismatch', table: 'relations', seq: r.seq, detail: `retracted_at is ${String(r.retracted_at)}, the records imply ${String(expectedRetracted)}` })
      if (r.superseded_by !== null) {
        const by = relationById.get(r.superseded_by)
        if (by === undefined || by.subject !== r.subject || by.predicate !== r.predicate || r.superseded_at === null) {
          report({ kind: 'derived-mismatch', table: 'relations', seq: r.seq, detail: `superseded_by ${r.superseded_by} is not a later value of the same subject and predicate` })
        }
      } else if (r.superseded_at !== null) {
        report({ kind: 'derived-mismatch', table: 'relations', seq: r.seq, detail: 'superseded_at is set without superseded_by' })
      }
    }

    return { ok: problems.length === 0, entries, head: lastHead, problems }
  }
}
