/** Row shapes of the brain's tables and their conversion to records and public objects. */
import { fromMilli, type MemoryRecord, type RetractionRecord } from './records.ts'
import { isoTime } from './time.ts'
import { VISIBILITIES, type Memory, type Retraction, type Source } from './types.ts'

export interface MemoryRow {
  seq: number
  id: string
  author: string
  key: string | null
  content: string
  kind: string
  topic: string | null
  tags: string
  visibility: number
  confidence: number
  valid_from: number
  valid_to: number | null
  created_at: number
  supersedes: string | null
  version: number
  signature: Buffer
  source: Source
  team_id: string | null
  recorded_at: number
  duplicate_of: string | null
  fingerprint: Buffer
  superseded_by: string | null
  superseded_at: number | null
  valid_end: number | null
  retracted_at: number | null
}

export interface RetractionRow {
  seq: number
  id: string
  author: string
  target: string
  target_type: 'memory' | 'relation'
  reason: string | null
  created_at: number
  signature: Buffer
  source: Source
  team_id: string | null
  recorded_at: number
}

/** The columns of a memory row that hold its signed record. */
export type MemoryRecordColumns = Pick<MemoryRow, 'author' | 'key' | 'content' | 'kind' | 'topic' | 'tags' | 'visibility' | 'confidence' | 'valid_from' | 'valid_to' | 'created_at' | 'supersedes' | 'version'>

/** Parsed tags; nearly every memory has none, which needs no JSON parse. */
export function tagsOfColumn (tags: string): string[] {
  return tags === '[]' ? [] : JSON.parse(tags) as string[]
}

export function memoryRecordOfRow (row: MemoryRecordColumns): MemoryRecord {
  return {
    record: 'memory',
    v: 1,
    author: row.author,
    key: row.key,
    content: row.content,
    kind: row.kind,
    topic: row.topic,
    tags: tagsOfColumn(row.tags),
    visibility: VISIBILITIES[row.visibility],
    confidence: row.confidence,
    valid_from: row.valid_from,
    valid_to: row.valid_to,
    created_at: row.created_at,
    supersedes: row.supersedes,
    version: row.version
  }
}

/** Local metadata of a memory row that the audit digest covers (not derived from other rows). */
export function memoryLocal (row: { source: string, team_id: string | null, recorded_at: number, duplicate_of: string | null }): object {
  return { source: row.source, team_id: row.team_id, recorded_at: row.recorded_at, duplicate_of: row.duplicate_of }
}

export function memoryOfRow (row: MemoryRow): Memory {
  return {
    id: row.id,
    key: row.key,
    content: row.content,
    kind: row.kind,
    topic: row.topic,
    tags: JSON.parse(row.tags) as string[],
    visibility: VISIBILITIES[row.visibility],
    confidence: fromMilli(row.confidence),
    author: row.author,
    version: row.version,
    supersedes: row.supersedes,
    supersededBy: row.superseded_by,
    source: row.source,
    teamId: row.team_id,
    validFrom: isoTime(row.valid_from),
    validTo: isoTime(row.valid_to),
    validEnd: isoTime(row.valid_end),
    createdAt: isoTime(row.created_at),
    recordedAt: isoTime(row.recorded_at),
    supersededAt: isoTime(row.superseded_at),
    retractedAt: isoTime(row.retracted_at),
    duplicateOf: row.duplicate_of
  }
}

export function retractionRecordOfRow (row: RetractionRow): RetractionRecord {
  return { record: 'retraction', v: 1, author: row.author, target: row.target, target_type: row.target_type, reason: row.reason, created_at: row.created_at }
}

export function retractionLocal (row: { source: string, team_id: string | null, recorded_at: number }): object {
  return { source: row.source, team_id: row.team_id, recorded_at: row.recorded_at }
}

export function retractionOfRow (row: RetractionRow): Retraction {
  return {
    id: row.id,
    target: row.target,
    targetType: row.target_type,
    author: row.author,
    reason: row.reason,
    createdAt: isoTime(row.created_at),
    recordedAt: isoTime(row.recorded_at)
  }
}
