import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Database } from 'better-sqlite3'
import type { Identity } from '../identity/index.ts'
import { silentLogger, type Logger } from '../util/index.ts'
import { createChain } from './chain.ts'
import { createWriter, monotonicClock, type BrainContext } from './context.ts'
import { openDatabase, type Durability } from './db.ts'
import { BrainClosedError } from './errors.ts'
import { createGraph } from './graph.ts'
import { createIndexer } from './indexer.ts'
import { createPorter } from './jsonl.ts'
import { resolveLimits, type BrainLimits } from './limits.ts'
import { createMemories, metaTerms, type BulkResult } from './memories.ts'
import { migrate } from './migrations.ts'
import { buildOntology, DEFAULT_ONTOLOGY, loadOntologyFile, type Ontology, type OntologyDefinition } from './ontology.ts'
import { createPaths, type NeighborOptions, type PathOptions } from './paths.ts'
import { createSignPool, defaultSigningThreads, type SignPool } from './sign-pool.ts'
import { createRecaller, DEFAULT_RECALL_TUNING, type RecallTuning } from './recall.ts'
import { createStats } from './stats.ts'
import type {
  BrainStats, Entity, EntityRef, ImportOptions, ImportSummary, Memory, NeighborsResult, PathResult, RecallOptions,
  RecallResult, RelateInput, RelateResult, RememberInput, RememberResult, Retraction, VerifyReport
} from './types.ts'
import { createVerifier } from './verify.ts'

export const BRAIN_FILE = 'brain.db'

export interface BrainOptions {
  /** Directory that holds brain.db (created if missing). Give this or dbPath. */
  dataDir?: string
  /** Exact database file (':memory:' for a throwaway brain). */
  dbPath?: string
  identity: Identity
  logger?: Logger
  /** An ontology definition, or the path of an ontology JSON file (default: the built-in one). */
  ontology?: OntologyDefinition | string
  limits?: Partial<BrainLimits>
  /** See Durability in db.ts; default 'full'. */
  durability?: Durability
  recall?: Partial<RecallTuning>
  /**
   * Worker threads that sign bulk writes' records while the main thread stores them (default:
   * one per core but one, at most 3; 0 signs on the main thread). See sign-pool.ts.
   */
  signingThreads?: number
  /** Milliseconds since the epoch (tests pin time with it). */
  clock?: () => number
}

export interface Brain {
  readonly brainId: string
  readonly file: string
  readonly ontology: Ontology
  readonly limits: BrainLimits
  start: () => Promise<void>
  stop: () => Promise<void>
  remember: (input: RememberInput) => RememberResult
  rememberMany: (inputs: Iterable<RememberInput>, options?: { batchSize?: number, onBatch?: (committed: number) => void }) => BulkResult
  recall: (query: string, options?: RecallOptions) => RecallResult
  get: (id: string) => Memory
  history: (idOrKey: string) => Memory[]
  /** Retracts a memory (by id), every version of a key, or a relation (by id). */
  forget: (idOrKey: string, reason?: string | null) => Retraction[]
  relate: (input: RelateInput) => RelateResult
  /** Relates in transactions of `batchSize`; a failing input rolls back only its own batch. */
  relateMany: (inputs: Iterable<RelateInput>, options?: { batchSize?: number, onBatch?: (committed: number) => void }) => { created: number, unchanged: number }
  addAlias: (entity: string | EntityRef, alias: string) => Entity
  /** Finds an entity: exact name or alias, then case/diacritic-insensitive, then fuzzy. */
  resolveEntity: (ref: string | EntityRef) => Entity
  entities: () => Entity[]
  path: (from: string | EntityRef, to: string | EntityRef, options?: PathOptions) => PathResult
  neighbors: (entity: string | EntityRef, options?: NeighborOptions) => NeighborsResult
  verify: (options?: { signatures?: boolean }) => VerifyReport
  stats: () => BrainStats
  exportFile: (file: string) => { lines: number }
  exportLines: () => Generator<string>
  /** The signed export line of one memory, relation or retraction by id (undefined: not held). */
  signedLine: (id: string) => string | undefined
  importFile: (file: string, options?: ImportOptions) => Promise<ImportSummary>
  importLines: (lines: Iterable<string>, options?: ImportOptions) => ImportSummary
}

type Parts = ReturnType<typeof assemble>

function assemble (ctx: BrainContext, file: string, tuning: RecallTuning) {
  const memories = createMemories(ctx)
  memories.ensureAuthor(ctx.identity.brainId, ctx.identity.publicKey)
  const graph = createGraph(ctx)
  return {
    memories,
    graph,
    recaller: createRecaller(ctx, tuning),
    paths: createPaths(ctx, graph),
    verify: createVerifier(ctx, graph),
    stats: createStats(ctx, file),
    porter: createPorter(ctx, memories, graph)
  }
}

/**
 * The brain: a local memory engine with a knowledge graph, on one SQLite file.
 * Every method but start/stop and file import is synchronous: better-sqlite3 is, and a recall
 * takes well under a millisecond.
 */
export function createBrain (options: BrainOptions): Brain {
  const file = options.dbPath ?? (options.dataDir !== undefined ? join(options.dataDir, BRAIN_FILE) : undefined)
  if (file === undefined) throw new TypeError('createBrain needs dataDir or dbPath')
  const logger = options.logger ?? silentLogger()
  const limits = resolveLimits(options.limits)
  const ontology = typeof options.ontology === 'string' ? loadOntologyFile(options.ontology) : buildOntology(options.ontology ?? DEFAULT_ONTOLOGY)
  const tuning = { ...DEFAULT_RECALL_TUNING, ...options.recall }
  let db: Database | undefined
  let parts: Parts | undefined
  let closeIndexer = (): void => {}
  let signPool: SignPool | undefined

  const need = (): Parts => {
    if (parts === undefined) throw new BrainClosedError()
    return parts
  }

  return {
    brainId: options.identity.brainId,
    file,
    ontology,
    limits,
    async start () {
      if (parts !== undefined) return
      if (options.dataDir !== undefined && options.dbPath === undefined) mkdirSync(options.dataDir, { recursive: true })
      const opened = openDatabase(file, options.durability ?? 'full')
      try {
        const version = migrate(opened)
        const chain = createChain(opened)
        const durability = options.durability ?? 'full'
        const indexer = createIndexer(opened, durability, logger)
        const identity = options.identity
        const pool = createSignPool(identity, options.signingThreads ?? defaultSigningThreads(), logger)
        indexer.recover((row) => metaTerms(row.key, row.topic, JSON.parse(row.tags) as string[]))
        const ctx: BrainContext = {
          db: opened,
          identity: options.identity,
          limits,
          ontology,
          logger,
          chain,
          indexer,
          now: monotonicClock(options.clock ?? Date.now),
          signBatch: (items) => pool?.begin(items) ?? { signature: (i) => identity.sign(items[i].context, items[i].bytes) },
          write: createWriter(opened, chain, indexer)
        }
        parts = assemble(ctx, file, tuning)
        closeIndexer = () => { indexer.close() }
        signPool = pool
        db = opened
        logger.info({ file, schemaVersion: version, logEntries: chain.head().seq }, 'brain opened')
      } catch (err) {
        opened.close()
        throw err
      }
    },
    async stop () {
      if (db === undefined) return
      try { closeIndexer() } catch (err) { logger.error({ err }, 'brain: final full-text index flush failed; it is rebuilt at the next start') }
      parts = undefined
      db.close()
      db = undefined
      await signPool?.close()
      signPool = undefined
      logger.info({ file }, 'brain closed')
    },
    remember: (input) => need().memories.remember(input),
    rememberMany: (inputs, opts) => need().memories.rememberMany(inputs, opts),
    recall: (query, opts) => need().recaller.recall(query, opts),
    get: (id) => need().memories.get(id),
    history: (target) => need().memories.history(target),
    forget: (target, reason) => need().memories.forget(target, reason),
    relate: (input) => need().graph.relate(input),
    relateMany: (inputs, opts) => need().graph.relateMany(inputs, opts),
    addAlias: (entity, alias) => need().graph.addAlias(entity, alias),
    resolveEntity: (ref) => { const p = need(); return p.graph.entityOf(p.graph.entity(ref)) },
    entities: () => need().graph.listEntities(),
    path: (from, to, opts) => need().paths.path(from, to, opts),
    neighbors: (entity, opts) => need().paths.neighbors(entity, opts),
    verify: (opts) => need().verify(opts),
    stats: () => need().stats(),
    exportFile: (target) => need().porter.exportFile(target),
    exportLines: () => need().porter.exportLines(),
    signedLine: (id) => need().porter.signedLine(id),
    importFile: async (source, opts) => await need().porter.importFile(source, opts),
    importLines: (lines, opts) => need().porter.importLines(lines, opts)
  }
}
