/**
 * The full-text index and the fingerprint bands are written behind the memories: a single
 * remember() commits (and fsyncs) only the memory row and its log entry, and queues the index
 * terms and LSH bands (each band lands on a random page, so writing them per commit would add
 * most of a commit's pages). The queue
 * is flushed in one transaction by the next recall, by a bulk write, when it grows, after a short
 * delay, and at stop(). Bulk writes index inline, in their own transaction.
 *
 * Both are derived data: meta.fts_seq records the highest memory seq indexed, in the same
 * transaction as the index rows, and start() indexes whatever lies above it (a crash can only
 * lose index rows, which are rebuilt from the memories' content and fingerprints). So the flush needs no fsync of its own:
 * it commits with synchronous=NORMAL, and the next durable commit's fsync covers its frames too.
 */
import type { Database, Statement } from 'better-sqlite3'
import type { Logger } from '../util/index.ts'
import { createBandFilter, type BandFilter } from './band-filter.ts'
import type { Durability } from './db.ts'
import { BAND_PAIRS_SQL, BANDS, bandKeys, fingerprintFromBlob, minhash } from './fingerprint.ts'
import { terms } from './text.ts'

const FLUSH_DELAY_MS = 50
const FLUSH_AT = 256

type Queued = [seq: number, termText: string, metaText: string, bands: number[] | null]

export interface QueueSnapshot {
  queued: Queued[]
  indexedSeq: number
}

export interface Indexer {
  queue: (seq: number, termText: string, metaText: string, bands: number[] | null) => void
  /**
   * False when no memory (indexed or queued) has any of `bands`, from the band filter once
   * useBandFilter() loaded it; true when one may, or when the filter is not loaded.
   */
  mayHoldAnyBand: (bands: number[]) => boolean
  /**
   * Loads the band filter (a scan of fingerprint_bands), sized for `incoming` more memories,
   * unless it is loaded; bulk writes call it before each batch (a filter that got too full is
   * dropped when a band is added, and rebuilt here).
   */
  useBandFilter: (incoming: number) => void
  /** Queued memories sharing a band with `bands` (they are not in fingerprint_bands yet). */
  queuedBandMatches: (bands: number[]) => number[]
  /** Writes the queued rows inside the caller's transaction. */
  flushWithin: () => void
  /** Writes the queued rows in a transaction of its own (no-op when nothing is queued). */
  flush: () => void
  pending: () => number
  /** The queue as it is now, for restore() if the transaction about to start rolls back. */
  snapshot: () => QueueSnapshot
  restore: (snapshot: QueueSnapshot) => void
  /**
   * Documents holding a term, from an in-memory table loaded from fts5vocab on first use and kept
   * up to date as rows are indexed (fts5vocab itself walks the term's whole doclist per look-up).
   */
  documentFrequency: (term: string) => number
  /** Indexes memories the index has not seen (after a crash). Returns how many. */
  recover: (metaTermsOf: (row: { key: string | null, topic: string | null, tags: string }) => string) => number
  close: () => void
}

export function createIndexer (db: Database, durability: Durability, logger: Logger): Indexer {
  const insert: Statement = db.prepare('INSERT INTO memories_fts (rowid, terms, meta) VALUES (?, ?, ?)')
  const insertBands: Statement = db.prepare(`INSERT OR IGNORE INTO fingerprint_bands (band, memory) VALUES ${BAND_PAIRS_SQL}`)
  const readIndexed = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE name = 'fts_seq'")
  const storeIndexed: Statement = db.prepare("INSERT INTO meta (name, value) VALUES ('fts_seq', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
  const unindexed = db.prepare<[number], { seq: number, content: string, key: string | null, topic: string | null, tags: string, fingerprint: Buffer }>(
    'SELECT seq, content, key, topic, tags, fingerprint FROM memories WHERE seq > ? ORDER BY seq')
  const vocabulary = db.prepare<[], { term: string, doc: number }>('SELECT term, doc FROM memories_vocab')
  const allBands = db.prepare<[], number>('SELECT band FROM fingerprint_bands').pluck()
  const memoryCount = db.prepare<[], number | null>('SELECT max(seq) FROM memories').pluck()
  let bandFilter: BandFilter | undefined
  let frequencies: Map<string, number> | undefined
  let queued: Queued[] = []
  // band -> queued memory seqs, so near-duplicate checks against the queue are look-ups, not scans
  let queuedBands = new Map<number, number[]>()
  // a database whose index predates meta.fts_seq: the index holds everything up to its last row
  const lastIndexed = db.prepare<[], { n: number | null }>('SELECT max(id) AS n FROM memories_fts_docsize')
  let indexedSeq = Number(readIndexed.get()?.value ?? lastIndexed.get()?.n ?? 0)
  let timer: NodeJS.Timeout | undefined

  const flushWithin = (): void => {
    if (queued.length === 0) return
    for (const [seq, termText, metaText, bands] of queued) {
      insert.run(seq, termText, metaText)
      if (bands !== null) insertBands.run(bands.flatMap((band) => [band, seq]))
      if (seq > indexedSeq) indexedSeq = seq
      if (frequencies !== undefined) {
        for (const term of new Set((termText + ' ' + metaText).split(' '))) {
          if (term.length > 0) frequencies.set(term, (frequencies.get(term) ?? 0) + 1)
        }
      }
    }
    storeIndexed.run(String(indexedSeq))
    queued = []
    queuedBands = new Map()
  }

  const flush = (): void => {
    if (timer !== undefined) { clearTimeout(timer); timer = undefined }
    if (queued.length === 0) return
    if (db.inTransaction) { flushWithin(); return }
    const before = indexedSeq
    const rows = queued
    if (durability === 'full') db.pragma('synchronous = NORMAL')
    try {
      db.transaction(flushWithin).immediate()
    } catch (err) {
      queued = rows
      indexedSeq = before
      throw err
    } finally {
      if (durability === 'full') db.pragma('synchronous = FULL')
    }
  }

  return {
    queue (seq, termText, metaText, bands) {
      queued.push([seq, termText, metaText, bands])
      if (bands !== null) {
        if (bandFilter !== undefined) {
          for (const band of bands) bandFilter.add(band)
          // too full to say "no" often: the next bulk batch rebuilds it larger
          if (bandFilter.full()) bandFilter = undefined
        }
        for (const band of bands) {
          const seqs = queuedBands.get(band)
          if (seqs === undefined) queuedBands.set(band, [seq])
          else seqs.push(seq)
        }
      }
      if (queued.length >= FLUSH_AT && !db.inTransaction) {
        flush()
      } else if (timer === undefined) {
        timer = setTimeout(() => {
          timer = undefined
          try { flush() } catch (err) { logger.error({ err }, 'brain: full-text index flush failed; retried on next recall') }
        }, FLUSH_DELAY_MS)
        timer.unref()
      }
    },
    mayHoldAnyBand (bands) {
      if (bandFilter === undefined) return true
      for (const band of bands) if (bandFilter.mayHold(band)) return true
      return false
    },
    useBandFilter (incoming) {
      if (bandFilter !== undefined) return
      const filter = createBandFilter(((memoryCount.get() ?? 0) + incoming) * BANDS)
      for (const band of allBands.iterate()) filter.add(band)
      for (const band of queuedBands.keys()) filter.add(band)
      bandFilter = filter
    },
    queuedBandMatches (bands) {
      const matches: number[] = []
      for (const band of bands) for (const seq of queuedBands.get(band) ?? []) matches.push(seq)
      return matches
    },
    flushWithin,
    flush,
    pending: () => queued.length,
    snapshot: () => ({ queued: queued.slice(), indexedSeq }),
    restore (snapshot) {
      queued = snapshot.queued.slice()
      indexedSeq = snapshot.indexedSeq
      queuedBands = new Map()
      for (const [seq, , , bands] of queued) {
        if (bands === null) continue
        for (const band of bands) {
          const seqs = queuedBands.get(band)
          if (seqs === undefined) queuedBands.set(band, [seq])
          else seqs.push(seq)
        }
      }
      // document frequencies may count rows the rollback removed: reload them on next use
      frequencies = undefined
    },
    documentFrequency (term) {
      if (frequencies === undefined) {
        const loaded = new Map<string, number>()
        for (const row of vocabulary.iterate()) loaded.set(row.term, row.doc)
        frequencies = loaded
      }
      return frequencies.get(term) ?? 0
    },
    recover (metaTermsOf) {
      let n = 0
      db.transaction(() => {
        for (const row of unindexed.iterate(indexedSeq)) {
          const fingerprint = fingerprintFromBlob(row.fingerprint)
          queued.push([row.seq, terms(row.content).join(' '), metaTermsOf(row), fingerprint.length > 0 ? bandKeys(minhash(fingerprint)) : null])
          n++
          if (queued.length >= 1000) flushWithin()
        }
        flushWithin()
      })()
      if (n > 0) logger.warn({ memories: n }, 'brain: indexed memories the full-text index had not seen (after a crash)')
      return n
    },
    close () {
      flush()
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
    }
  }
}
