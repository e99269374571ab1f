import type { Database } from 'better-sqlite3'
import type { Identity } from '../identity/index.ts'
import type { Logger } from '../util/index.ts'
import type { Chain } from './chain.ts'
import type { Indexer } from './indexer.ts'
import type { BrainLimits } from './limits.ts'
import type { Ontology } from './ontology.ts'
import type { SignBatch, SignItem } from './sign-pool.ts'

/** What the brain's parts share: one connection, one signer, one chain, one clock. */
export interface BrainContext {
  db: Database
  identity: Identity
  limits: BrainLimits
  ontology: Ontology
  logger: Logger
  chain: Chain
  /** The write-behind full-text index (see indexer.ts). */
  indexer: Indexer
  /** Milliseconds since the epoch, never going backwards within this brain. */
  now: () => number
  /** Signs a batch of this brain's records, on the signing workers when there are some (see sign-pool.ts). */
  signBatch: (items: SignItem[]) => SignBatch
  /** Runs `fn` in one write transaction: all of it commits (with the chain head) or none of it. */
  write: <T>(fn: () => T) => T
}

export function createWriter (db: Database, chain: Chain, indexer: Indexer): <T>(fn: () => T) => T {
  return <T>(fn: () => T): T => {
    if (db.inTransaction) return fn()
    // the write-behind queue must forget what a rolled-back transaction queued (and get back
    // what it flushed), or the index would get rows for memories that were never committed
    const queue = indexer.snapshot()
    try {
      return db.transaction(() => {
        const result = fn()
        chain.saveHead()
        return result
      }).immediate()
    } catch (err) {
      chain.reload()
      indexer.restore(queue)
      throw err
    }
  }
}

export function monotonicClock (clock: () => number): () => number {
  let last = 0
  return () => {
    const t = Math.trunc(clock())
    if (t > last) last = t
    return last
  }
}
