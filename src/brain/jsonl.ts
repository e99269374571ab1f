/**
 * Portable JSON Lines export and import.
 *
 * Export writes entities, then memories, relations and retractions (each with its author key and
 * signature) to a temporary file, fsyncs it and renames it into place.
 *
 * Import takes those lines back, and also plain lines {"key"?, "content", "kind"?, "topic"?,
 * "visibility"?, "valid_from"?} (and unsigned {"type":"relation", subject, predicate, object}),
 * which this brain signs as their author. It runs in two passes: the first parses and checks
 * every line (schema, limits, UTF-8, ontology, signatures) and writes nothing, so a bad line
 * fails the import with nothing written; the second writes in transactions of bounded size, so a
 * crash mid-import leaves whole batches, each acknowledged through onBatch after it commits.
 */
import { closeSync, createReadStream, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import { z } from 'zod'
import { InvalidInputError, isPermagentError, PermagentError, TooLargeError } from '../util/index.ts'
import type { BrainContext } from './context.ts'
import { BadSignatureError, ImportLineError } from './errors.ts'
import type { Graph, RelationRow } from './graph.ts'
import type { Memories } from './memories.ts'
import { canonicalBytes, checkSignature, recordId, toMilli, type MemoryRecord, type RelationRecord, type RetractionRecord, type Sealed, type SignedRecord } from './records.ts'
import { memoryRecordOfRow, retractionRecordOfRow, type MemoryRow, type RetractionRow } from './rows.ts'
import { isoTime, parseTime } from './time.ts'
import { VISIBILITIES, type ImportOptions, type ImportSummary, type Source } from './types.ts'
import { checkConfidence, checkContent, checkKind, checkLabel, checkMemoryInput, checkTags, checkVisibility, optionalLabel, type CheckedMemoryInput } from './validate.ts'

const HEX64 = z.string().regex(/^[0-9a-f]{64}$/)
const TIME = z.union([z.string().max(64), z.number().int()])
const ENTITY_KEY = z.object({ type: z.string().max(64), name: z.string().max(1024) })

const plainMemoryLine = z.object({
  type: z.literal('memory').optional(),
  key: z.string().nullish(),
  content: z.string(),
  kind: z.string().nullish(),
  topic: z.string().nullish(),
  tags: z.array(z.string()).nullish(),
  visibility: z.string().nullish(),
  confidence: z.number().nullish(),
  valid_from: TIME.nullish(),
  valid_to: TIME.nullish()
}).passthrough()

const signedFields = { id: HEX64.optional(), author: HEX64, author_key: HEX64, signature: z.string().max(200) }

const signedMemoryLine = z.object({
  type: z.literal('memory').optional(),
  ...signedFields,
  key: z.string().nullable(),
  content: z.string(),
  kind: z.string(),
  topic: z.string().nullable(),
  tags: z.array(z.string()),
  visibility: z.enum(VISIBILITIES),
  confidence: z.number(),
  valid_from: TIME,
  valid_to: TIME.nullable(),
  created_at: TIME,
  supersedes: HEX64.nullable(),
  version: z.number().int().min(1)
})

const relationLine = z.object({
  type: z.literal('relation'),
  id: HEX64.optional(),
  author: HEX64.optional(),
  author_key: HEX64.optional(),
  signature: z.string().max(200).optional(),
  subject: ENTITY_KEY,
  predicate: z.string().max(64),
  object: ENTITY_KEY,
  confidence: z.number().optional(),
  valid_from: TIME.nullish(),
  valid_to: TIME.nullish(),
  created_at: TIME.optional(),
  source_memory: HEX64.nullish()
})

const retractionLine = z.object({
  type: z.literal('retraction'),
  ...signedFields,
  target: HEX64,
  target_type: z.enum(['memory', 'relation']),
  reason: z.string().max(1024).nullable(),
  created_at: TIME
})

const entityLine = z.object({
  type: z.literal('entity'),
  entity_type: z.string().max(64),
  name: z.string().max(1024),
  aliases: z.array(z.string().max(1024)).max(256).default([])
})

type Parsed =
  | { kind: 'plain-memory', input: CheckedMemoryInput }
  | { kind: 'signed', sealed: Sealed<SignedRecord>, publicKey: Buffer }
  | { kind: 'plain-relation', subject: { type: string, name: string }, predicate: string, object: { type: string, name: string }, confidence: number, validFrom: number | undefined, validTo: number | null, sourceMemory: string | null }
  | { kind: 'entity', type: string, name: string, aliases: string[] }

function zodMessage (error: z.ZodError): string {
  return error.issues.slice(0, 3).map((i) => `${i.path.join('.') || 'line'}: ${i.message}`).join('; ')
}

function schemaParse<T> (schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value)
  if (!result.success) throw new InvalidInputError(zodMessage(result.error))
  return result.data
}

export interface Porter {
  exportFile: (file: string) => { lines: number }
  exportLines: () => Generator<string>
  /** The signed export line of one memory, relation or retraction (what a team shard carries). */
  signedLine: (id: string) => string | undefined
  importFile: (file: string, options?: ImportOptions) => Promise<ImportSummary>
  importLines: (lines: Iterable<string>, options?: ImportOptions) => ImportSummary
}

/** Splits a file into lines, decoding each as strict UTF-8 and bounding its length. */
async function * fileLines (file: string, maxBytes: number): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true })
  let pending: Buffer[] = []
  let pendingBytes = 0
  let lineNumber = 0
  const decode = (bytes: Buffer): string => {
    lineNumber++
    if (bytes.length > maxBytes) throw new ImportLineError(lineNumber, 'line too long', new TooLargeError('an import line', bytes.length, maxBytes))
    try {
      return decoder.decode(bytes)
    } catch {
      throw new ImportLineError(lineNumber, 'not valid UTF-8', new InvalidInputError('not valid UTF-8'))
    }
  }
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let start = 0
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      pending.push(chunk.subarray(start, nl))
      yield decode(Buffer.concat(pending))
      pending = []
      pendingBytes = 0
      start = nl + 1
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start))
      pendingBytes += chunk.length - start
      if (pendingBytes > maxBytes) throw new ImportLineError(lineNumber + 1, 'line too long', new TooLargeError('an import line', pendingBytes, maxBytes))
    }
  }
  if (pendingBytes > 0) yield decode(Buffer.concat(pending))
}

export function createPorter (ctx: BrainContext, memories: Memories, graph: Graph): Porter {
  const { db, limits, ontology } = ctx
  const me = ctx.identity.brainId
  const allEntities = db.prepare<[], { seq: number, type: string, name: string }>('SELECT seq, type, name FROM entities ORDER BY seq')
  const aliasesOf = db.prepare<[number], { alias: string }>('SELECT alias FROM aliases WHERE entity = ? ORDER BY seq')
  const allMemories = db.prepare<[], MemoryRow>('SELECT * FROM memories ORDER BY seq')
  const allRelations = db.prepare<[], RelationRow>('SELECT * FROM relations ORDER BY seq')
  const allRetractions = db.prepare<[], RetractionRow>('SELECT * FROM retractions ORDER BY seq')
  const authorKey = db.prepare<[string], { public_key: Buffer }>('SELECT public_key FROM authors WHERE id = ?')

  const keyHex = (author: string): string => {
    const row = authorKey.get(author)
    if (row === undefined) throw new PermagentError('ERR_BRAIN_CORRUPT', `no public key stored for author ${author}`)
    return row.public_key.toString('hex')
  }

  const memoryById = db.prepare<[string], MemoryRow>('SELECT * FROM memories WHERE id = ?')
  const relationById = db.prepare<[string], RelationRow>('SELECT * FROM relations WHERE id = ?')
  const retractionById = db.prepare<[string], RetractionRow>('SELECT * FROM retractions WHERE id = ?')

  function lineOfMemory (row: MemoryRow): string {
    const r = memoryRecordOfRow(row)
    return JSON.stringify({
      type: 'memory', id: row.id, author: r.author, author_key: keyHex(r.author), signature: row.signature.toString('base64'),
      key: r.key, content: r.content, kind: r.kind, topic: r.topic, tags: r.tags, visibility: r.visibility,
      confidence: r.confidence / 1000, valid_from: isoTime(r.valid_from), valid_to: isoTime(r.valid_to), created_at: isoTime(r.created_at),
      supersedes: r.supersedes, version: r.version
    })
  }

  function lineOfRelation (row: RelationRow): string {
    const r = graph.relationRecordOfRow(row)
    return JSON.stringify({
      type: 'relation', id: row.id, author: r.author, author_key: keyHex(r.author), signature: row.signature.toString('base64'),
      subject: r.subject, predicate: r.predicate, object: r.object, confidence: r.confidence / 1000,
      valid_from: isoTime(r.valid_from), valid_to: isoTime(r.valid_to), created_at: isoTime(r.created_at), source_memory: r.source_memory
    })
  }

  function lineOfRetraction (row: RetractionRow): string {
    const r = retractionRecordOfRow(row)
    return JSON.stringify({
      type: 'retraction', id: row.id, author: r.author, author_key: keyHex(r.author), signature: row.signature.toString('base64'),
      target: r.target, target_type: r.target_type, reason: r.reason, created_at: isoTime(r.created_at)
    })
  }

  function * exportLines (): Generator<string> {
    for (const e of allEntities.iterate()) {
      yield JSON.stringify({ type: 'entity', entity_type: e.type, name: e.name, aliases: aliasesOf.all(e.seq).map((a) => a.alias).filter((a) => a !== e.name) })
    }
    for (const row of allMemories.iterate()) yield lineOfMemory(row)
    for (const row of allRelations.iterate()) yield lineOfRelation(row)
    for (const row of allRetractions.iterate()) yield lineOfRetraction(row)
  }

  function signedLine (id: string): string | undefined {
    const memory = memoryById.get(id)
    if (memory !== undefined) return lineOfMemory(memory)
    const relation = relationById.get(id)
    if (relation !== undefined) return lineOfRelation(relation)
    const retraction = retractionById.get(id)
    return retraction !== undefined ? lineOfRetraction(retraction) : undefined
  }

  function exportFile (file: string): { lines: number } {
    const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
    const fd = openSync(temp, 'wx', 0o600)
    let lines = 0
    try {
      let chunk: string[] = []
      const flush = (): void => { if (chunk.length > 0) { writeSync(fd, chunk.join('')); chunk = [] } }
      for (const line of exportLines()) {
        chunk.push(line + '\n')
        lines++
        if (chunk.length >= 1000) flush()
      }
      flush()
      fsyncSync(fd)
      closeSync(fd)
    } catch (err) {
      closeSync(fd)
      unlinkSync(temp)
      throw err
    }
    renameSync(temp, file)
    return { lines }
  }

  function verifySigned (record: SignedRecord, lineId: string | undefined, authorKeyHex: string, signatureB64: string): Parsed {
    const bytes = canonicalBytes(record)
    const id = recordId(bytes)
    if (lineId !== undefined && lineId !== id) throw new BadSignatureError(`record id ${lineId} does not match its content (hashes to ${id}): the record was altered`)
    const publicKey = Buffer.from(authorKeyHex, 'hex')
    const signature = Buffer.from(signatureB64, 'base64')
    const failure = checkSignature(record, bytes, publicKey, signature)
    if (failure !== undefined) throw new BadSignatureError(`${record.record} ${id}: ${failure}; refusing a tampered or forged record`)
    return { kind: 'signed', sealed: { record, bytes, id, signature }, publicKey }
  }

  /** Parses and fully checks one line; throws a PermagentError explaining what is wrong. */
  function parseLine (line: string): Parsed {
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch {
      throw new InvalidInputError('not valid JSON')
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new InvalidInputError('a line must be a JSON object')
    const type = (json as { type?: unknown }).type
    const signed = (json as { signature?: unknown }).signature !== undefined
    if (type === undefined || type === 'memory') {
      if (!signed) {
        const p = schemaParse(plainMemoryLine, json)
        return {
          kind: 'plain-memory',
          input: checkMemoryInput({
            key: p.key, content: p.content, kind: p.kind ?? undefined, topic: p.topic, tags: p.tags ?? undefined,
            visibility: (p.visibility ?? undefined) as never, confidence: p.confidence ?? undefined, validFrom: p.valid_from, validTo: p.valid_to
          }, limits)
        }
      }
      const p = schemaParse(signedMemoryLine, json)
      const record: MemoryRecord = {
        record: 'memory', v: 1, author: p.author, key: optionalLabel(p.key, limits.keyBytes, 'key'), content: checkContent(p.content, limits),
        kind: checkKind(p.kind, limits), topic: optionalLabel(p.topic, limits.topicBytes, 'topic'), tags: p.tags,
        visibility: checkVisibility(p.visibility), confidence: toMilli(checkConfidence(p.confidence)),
        valid_from: parseTime(p.valid_from, 'valid_from'), valid_to: p.valid_to === null ? null : parseTime(p.valid_to, 'valid_to'),
        created_at: parseTime(p.created_at, 'created_at'), supersedes: p.supersedes, version: p.version
      }
      checkTags(p.tags, limits)
      return verifySigned(record, p.id, p.author_key, p.signature)
    }
    if (type === 'relation') {
      const p = schemaParse(relationLine, json)
      const rule = ontology.predicate(p.predicate)
      ontology.checkType(p.subject.type)
      ontology.checkType(p.object.type)
      ontology.checkRelation(p.subject.type, rule, p.object.type)
      const subject = { type: p.subject.type, name: checkLabel(p.subject.name, limits.entityNameBytes, 'subject name') }
      const object = { type: p.object.type, name: checkLabel(p.object.name, limits.entityNameBytes, 'object name') }
      const confidence = checkConfidence(p.confidence)
      if (!signed) {
        return {
          kind: 'plain-relation', subject, predicate: rule.name, object, confidence,
          validFrom: p.valid_from == null ? undefined : parseTime(p.valid_from, 'valid_from'),
          validTo: p.valid_to == null ? null : parseTime(p.valid_to, 'valid_to'),
          sourceMemory: p.source_memory ?? null
        }
      }
      if (p.author === undefined || p.author_key === undefined || p.signature === undefined || p.valid_from == null || p.created_at === undefined) {
        throw new InvalidInputError('a signed relation needs author, author_key, signature, valid_from and created_at')
      }
      const record: RelationRecord = {
        record: 'relation', v: 1, author: p.author, subject, predicate: rule.name, object, confidence: toMilli(confidence),
        valid_from: parseTime(p.valid_from, 'valid_from'), valid_to: p.valid_to == null ? null : parseTime(p.valid_to, 'valid_to'),
        created_at: parseTime(p.created_at, 'created_at'), source_memory: p.source_memory ?? null
      }
      return verifySigned(record, p.id, p.author_key, p.signature)
    }
    if (type === 'retraction') {
      const p = schemaParse(retractionLine, json)
      const record: RetractionRecord = {
        record: 'retraction', v: 1, author: p.author, target: p.target, target_type: p.target_type, reason: p.reason, created_at: parseTime(p.created_at, 'created_at')
      }
      return verifySigned(record, p.id, p.author_key, p.signature)
    }
    if (type === 'entity') {
      const p = schemaParse(entityLine, json)
      ontology.checkType(p.entity_type)
      return {
        kind: 'entity', type: p.entity_type, name: checkLabel(p.name, limits.entityNameBytes, 'entity name'),
        aliases: p.aliases.map((a) => checkLabel(a, limits.entityNameBytes, 'alias'))
      }
    }
    throw new InvalidInputError(`unknown line type ${JSON.stringify(type)}; expected memory, relation, retraction or entity`)
  }

  function lineError (lineNumber: number, err: unknown): ImportLineError {
    if (err instanceof ImportLineError) return err
    if (isPermagentError(err)) return new ImportLineError(lineNumber, err.message, err)
    return new ImportLineError(lineNumber, (err as Error).message)
  }

  /** Writes one checked line inside the current transaction; 'skipped' when it was already present. */
  function writeLine (parsed: Parsed, source: Source, teamId: string | null): 'memory' | 'relation' | 'entity' | 'retraction' | 'skipped' {
    const local = { source, teamId }
    switch (parsed.kind) {
      case 'plain-memory':
        return memories.rememberChecked(parsed.input, { skipExactDuplicate: true }).created ? 'memory' : 'skipped'
      case 'plain-relation': {
        const result = graph.relate({ subject: parsed.subject, predicate: parsed.predicate, object: parsed.object, confidence: parsed.confidence, validFrom: parsed.validFrom, validTo: parsed.validTo, sourceMemory: parsed.sourceMemory })
        return result.created ? 'relation' : 'skipped'
      }
      case 'entity': {
        const entity = graph.ensureEntity({ type: parsed.type, name: parsed.name })
        for (const alias of parsed.aliases) graph.addAlias({ name: entity.name, type: entity.type }, alias)
        return 'entity'
      }
      case 'signed': {
        const { sealed, publicKey } = parsed
        memories.ensureAuthor(sealed.record.author, publicKey)
        if (sealed.record.record === 'memory') {
          const stored = memories.storeSigned(sealed as Sealed<MemoryRecord>, sealed.record.author === me ? { source: 'local', teamId: null } : local)
          return stored.created ? 'memory' : 'skipped'
        }
        if (sealed.record.record === 'relation') {
          return graph.storeSignedRelation(sealed as Sealed<RelationRecord>, local).created ? 'relation' : 'skipped'
        }
        return memories.storeRetraction(sealed as Sealed<RetractionRecord>, local) ? 'retraction' : 'skipped'
      }
    }
  }

  function newSummary (): ImportSummary {
    return { lines: 0, memories: 0, relations: 0, entities: 0, retractions: 0, skipped: 0, batches: 0 }
  }

  function count (summary: ImportSummary, outcome: ReturnType<typeof writeLine>): void {
    if (outcome === 'memory') summary.memories++
    else if (outcome === 'relation') summary.relations++
    else if (outcome === 'entity') summary.entities++
    else if (outcome === 'retraction') summary.retractions++
    else summary.skipped++
  }

  function batchWriter (options: ImportOptions): { add: (parsed: Parsed) => void, finish: () => ImportSummary } {
    const batchSize = options.batchSize ?? limits.importBatchSize
    const source = options.source ?? 'import'
    const teamId = options.teamId ?? null
    const summary = newSummary()
    let batch: Parsed[] = []
    const flush = (): void => {
      if (batch.length === 0) return
      const outcomes = ctx.write(() => {
        const written = batch.map((p) => writeLine(p, source, teamId))
        ctx.indexer.flushWithin()
        return written
      })
      for (const outcome of outcomes) count(summary, outcome)
      summary.lines += batch.length
      summary.batches++
      batch = []
      options.onBatch?.({ committed: summary.lines - summary.skipped, lines: summary.lines })
    }
    return {
      add (parsed) {
        batch.push(parsed)
        if (batch.length >= batchSize) flush()
      },
      finish () {
        flush()
        return summary
      }
    }
  }

  function importLines (linesInput: Iterable<string>, options: ImportOptions = {}): ImportSummary {
    const lines = Array.isArray(linesInput) ? linesInput as string[] : [...linesInput]
    lines.forEach((line, index) => {
      if (line.trim().length === 0) return
      try {
        if (line.length * 3 > limits.importLineBytes && Buffer.byteLength(line) > limits.importLineBytes) throw new TooLargeError('an import line', Buffer.byteLength(line), limits.importLineBytes)
        parseLine(line)
      } catch (err) { throw lineError(index + 1, err) }
    })
    const writer = batchWriter(options)
    for (const line of lines) if (line.trim().length > 0) writer.add(parseLine(line))
    return writer.finish()
  }

  async function importFile (file: string, options: ImportOptions = {}): Promise<ImportSummary> {
    let lineNumber = 0
    for await (const line of fileLines(file, limits.importLineBytes)) {
      lineNumber++
      if (line.trim().length === 0) continue
      try { parseLine(line) } catch (err) { throw lineError(lineNumber, err) }
    }
    const writer = batchWriter(options)
    for await (const line of fileLines(file, limits.importLineBytes)) {
      if (line.trim().length > 0) writer.add(parseLine(line))
    }
    return writer.finish()
  }

  return { exportFile, exportLines, signedLine, importFile, importLines }
}
