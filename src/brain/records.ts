/**
 * Canonical records: what is hashed (the id) and signed. A record is JSON with keys sorted
 * (recursively), no whitespace, times as integer epoch milliseconds and confidence as integer
 * thousandths, so every implementation produces the same bytes. id = hex SHA-256 of those bytes.
 * docs/brain.md lists the fields; changing them is a new `v`.
 */
import { createHash } from 'node:crypto'
import { SIGNATURE_CONTEXTS, brainIdFromPublicKey, verifySignature, type Identity } from '../identity/index.ts'
import type { Visibility } from './types.ts'

export interface MemoryRecord {
  record: 'memory'
  v: 1
  author: string
  key: string | null
  content: string
  kind: string
  topic: string | null
  tags: string[]
  visibility: Visibility
  /** Thousandths, 0..1000. */
  confidence: number
  valid_from: number
  valid_to: number | null
  created_at: number
  supersedes: string | null
  version: number
}

export interface EntityKey {
  type: string
  name: string
}

export interface RelationRecord {
  record: 'relation'
  v: 1
  author: string
  subject: EntityKey
  predicate: string
  object: EntityKey
  confidence: number
  valid_from: number
  valid_to: number | null
  created_at: number
  source_memory: string | null
}

export interface RetractionRecord {
  record: 'retraction'
  v: 1
  author: string
  target: string
  target_type: 'memory' | 'relation'
  reason: string | null
  created_at: number
}

export type SignedRecord = MemoryRecord | RelationRecord | RetractionRecord

// Sorted key lists per object shape: records of one type share a shape, so sorting happens once.
// Shapes are matched by comparing key lists (property names are interned strings, so this is a
// few pointer compares), which is cheaper than building a lookup string per object.
interface Shape {
  keys: string[]
  sorted: string[]
  /** `"key":` for each sorted key, quoted once. */
  labels: string[]
}
const shapes: Shape[] = []
const MAX_SHAPES = 64

function sameKeys (a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function shapeOf (object: Record<string, unknown>): Shape {
  const keys = Object.keys(object)
  for (let i = 0; i < shapes.length; i++) if (sameKeys(shapes[i].keys, keys)) return shapes[i]
  const sorted = keys.slice().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const shape = { keys, sorted, labels: sorted.map((key) => JSON.stringify(key) + ':') }
  if (shapes.length < MAX_SHAPES) shapes.push(shape)
  return shape
}

function canonicalValue (value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string': return JSON.stringify(value)
    case 'boolean': return value ? 'true' : 'false'
    case 'number':
      if (!Number.isSafeInteger(value)) throw new TypeError(`canonical records hold integers only, got ${value}`)
      return String(value)
    case 'object': {
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalValue(value[i])
        return out + ']'
      }
      const object = value as Record<string, unknown>
      let out = '{'
      let first = true
      const { sorted, labels } = shapeOf(object)
      for (let i = 0; i < sorted.length; i++) {
        const item = object[sorted[i]]
        if (item === undefined) continue
        out += (first ? '' : ',') + labels[i] + canonicalValue(item)
        first = false
      }
      return out + '}'
    }
    default:
      throw new TypeError(`cannot encode ${typeof value} canonically`)
  }
}

const encoder = new TextEncoder()

export function canonicalBytes (record: object): Uint8Array {
  return encoder.encode(canonicalValue(record))
}

export function sha256 (bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest()
}

export function recordId (bytes: Uint8Array): string {
  return sha256(bytes).toString('hex')
}

export function signatureContext (record: SignedRecord): string {
  if (record.record === 'relation') return SIGNATURE_CONTEXTS.relationRecord
  if (record.record === 'retraction' && record.target_type === 'relation') return SIGNATURE_CONTEXTS.relationRecord
  return SIGNATURE_CONTEXTS.memoryRecord
}

export interface Sealed<R extends SignedRecord> {
  record: R
  bytes: Uint8Array
  id: string
  signature: Uint8Array
}

/** A record encoded and hashed, not yet signed. */
export type Unsigned<R extends SignedRecord> = Omit<Sealed<R>, 'signature'>

export function encodeRecord<R extends SignedRecord> (record: R): Unsigned<R> {
  const bytes = canonicalBytes(record)
  return { record, bytes, id: recordId(bytes) }
}

/** Encodes, hashes and signs a record authored by `identity`. */
export function seal<R extends SignedRecord> (identity: Identity, record: R): Sealed<R> {
  const unsigned = encodeRecord(record)
  return { ...unsigned, signature: identity.sign(signatureContext(record), unsigned.bytes) }
}

/** Checks that `publicKey` belongs to the record's author and signed exactly these bytes. */
export function checkSignature (record: SignedRecord, bytes: Uint8Array, publicKey: Uint8Array, signature: Uint8Array): string | undefined {
  if (brainIdFromPublicKey(publicKey) !== record.author) return 'the author key does not match the author brain id'
  if (!verifySignature(publicKey, signatureContext(record), bytes, signature)) return 'the signature does not verify'
  return undefined
}

export function toMilli (confidence: number): number {
  return Math.round(confidence * 1000)
}

export function fromMilli (milli: number): number {
  return milli / 1000
}

/** The unsigned identity of an entity: type and canonical name. */
export function entityId (type: string, name: string): string {
  return recordId(canonicalBytes({ record: 'entity', v: 1, type, name }))
}
