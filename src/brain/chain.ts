/**
 * The audit chain: every record the brain writes (memory, retraction, entity, alias, relation)
 * appends a log entry whose hash covers the previous entry's hash, its position, the table row it
 * points at and a digest of that row. Editing, deleting or inserting rows behind the engine's back
 * breaks either a digest or the chain (see verify.ts). The head is kept in `meta` as well, so
 * dropping the newest entries is caught too.
 */
import type { Database, Statement } from 'better-sqlite3'
import { canonicalBytes, sha256 } from './records.ts'

export const LOG_OP = { memory: 1, retraction: 2, entity: 3, alias: 4, relation: 5 } as const
export type LogOp = typeof LOG_OP[keyof typeof LOG_OP]
export const LOG_TABLE: Record<LogOp, string> = { 1: 'memories', 2: 'retractions', 3: 'entities', 4: 'aliases', 5: 'relations' }

export const GENESIS_HASH = Buffer.alloc(32)

export function entryHash (previous: Uint8Array, seq: number, op: number, ref: number, digest: Uint8Array, at: number): Buffer {
  const frame = Buffer.alloc(32 + 8 + 1 + 8 + 32 + 8)
  let offset = 0
  frame.set(previous, offset); offset += 32
  frame.writeBigUInt64BE(BigInt(seq), offset); offset += 8
  frame.writeUInt8(op, offset); offset += 1
  frame.writeBigUInt64BE(BigInt(ref), offset); offset += 8
  frame.set(digest, offset); offset += 32
  frame.writeBigInt64BE(BigInt(at), offset)
  return sha256(frame)
}

/**
 * The digest of a stored row: the canonical record bytes, the signature (if any) and the local
 * metadata that is not derived from other rows, each length-prefixed.
 */
export function rowDigest (recordBytes: Uint8Array, signature: Uint8Array | null, local: object): Buffer {
  const localBytes = canonicalBytes(local)
  const sig = signature ?? new Uint8Array(0)
  const frame = Buffer.alloc(12 + recordBytes.length + sig.length + localBytes.length)
  let offset = 0
  for (const part of [recordBytes, sig, localBytes]) {
    frame.writeUInt32BE(part.length, offset); offset += 4
    frame.set(part, offset); offset += part.length
  }
  return sha256(frame)
}

export interface ChainHead {
  seq: number
  hash: Buffer
}

export interface Chain {
  append: (op: LogOp, ref: number, digest: Uint8Array, at: number) => void
  /** Stores the head in meta; call once at the end of each write transaction. */
  saveHead: () => void
  head: () => ChainHead
  /** Re-reads the head from the log (after a rolled-back transaction). */
  reload: () => void
}

export function formatHead (head: ChainHead): string {
  return `${head.seq}:${head.hash.toString('hex')}`
}

export function createChain (db: Database): Chain {
  const insert: Statement = db.prepare('INSERT INTO log (seq, op, ref, digest, at, hash) VALUES (?, ?, ?, ?, ?, ?)')
  const last = db.prepare<[], { seq: number, hash: Buffer }>('SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1')
  const storeHead = db.prepare("INSERT INTO meta (name, value) VALUES ('head', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
  let head: ChainHead = { seq: 0, hash: GENESIS_HASH }
  let dirty = false

  const reload = (): void => {
    const row = last.get()
    head = row === undefined ? { seq: 0, hash: GENESIS_HASH } : { seq: row.seq, hash: row.hash }
    dirty = false
  }
  reload()

  return {
    append (op, ref, digest, at) {
      const seq = head.seq + 1
      const hash = entryHash(head.hash, seq, op, ref, digest, at)
      insert.run(seq, op, ref, digest, at, hash)
      head = { seq, hash }
      dirty = true
    },
    saveHead () {
      if (!dirty) return
      storeHead.run(formatHead(head))
      dirty = false
    },
    head: () => head,
    reload
  }
}
