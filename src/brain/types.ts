import type { TimeInput } from './time.ts'

export const VISIBILITIES = ['private', 'team', 'org', 'public'] as const
/** Who may see a memory, in increasing order: private < team < org < public. */
export type Visibility = typeof VISIBILITIES[number]

export const SOURCES = ['local', 'import', 'team'] as const
/** How this brain came to hold a record. */
export type Source = typeof SOURCES[number]

export const DEFAULT_KINDS = ['fact', 'preference', 'event', 'decision', 'rule', 'note', 'observation', 'task', 'dialogue'] as const

export interface RememberInput {
  content: string
  key?: string | null
  kind?: string
  topic?: string | null
  tags?: string[]
  visibility?: Visibility
  confidence?: number
  validFrom?: TimeInput | null
  validTo?: TimeInput | null
}

export interface Memory {
  id: string
  key: string | null
  content: string
  kind: string
  topic: string | null
  tags: string[]
  visibility: Visibility
  confidence: number
  author: string
  /** 1 for the first version of a key; each update adds one. */
  version: number
  supersedes: string | null
  supersededBy: string | null
  source: Source
  teamId: string | null
  validFrom: string
  validTo: string | null
  /** End of validity as far as this brain knows: valid_to, or the valid_from of the version that superseded it. */
  validEnd: string | null
  createdAt: string
  recordedAt: string
  supersededAt: string | null
  retractedAt: string | null
  duplicateOf: string | null
}

export interface RememberResult {
  memory: Memory
  /** False when the key's current version already said exactly this (nothing was written). */
  created: boolean
  /** The memory this one nearly duplicates (shingle Jaccard >= the near-duplicate threshold). */
  nearDuplicate: { id: string, similarity: number } | null
}

/** Either time axis, or both: recorded = what this brain knew then; valid = what was true then. */
export interface AsOf {
  recorded?: TimeInput
  valid?: TimeInput
}

export interface RecallOptions {
  limit?: number
  kind?: string
  topic?: string
  /**
   * The visibility ceiling: the widest audience the results may reach. Only memories at least
   * this visible are returned ('team': team, org and public memories, never private ones).
   * Default 'private': the brain's owner sees everything.
   */
  visibility?: Visibility
  author?: string
  source?: Source
  teamId?: string
  asOf?: AsOf
  /** Re-check each hit's Ed25519 signature instead of trusting the check made at ingest. */
  verifySignatures?: boolean
  /** Also run a feedback query with the rarest terms of the best hits (about twice the cost). */
  expand?: boolean
}

export interface RecallHit {
  id: string
  key: string | null
  content: string
  score: number
  author: string
  version: number
  signatureValid: boolean
  kind: string
  topic: string | null
  tags: string[]
  visibility: Visibility
  confidence: number
  source: Source
  teamId: string | null
  validFrom: string
  validTo: string | null
  recordedAt: string
  supersededAt: string | null
  /** How the hit was scored: BM25 (normalised), shingle containment, recency. */
  signals: { bm25: number, fingerprint: number, recency: number }
}

export interface RecallResult {
  hits: RecallHit[]
}

export interface EntityRef {
  name: string
  type?: string
}

export interface Entity {
  id: string
  type: string
  name: string
  aliases: string[]
}

export interface RelateInput {
  subject: string | EntityRef
  predicate: string
  object: string | EntityRef
  confidence?: number
  validFrom?: TimeInput | null
  validTo?: TimeInput | null
  /** The memory this relation was learned from (its id). */
  sourceMemory?: string | null
}

export interface Relation {
  id: string
  subject: Entity
  predicate: string
  object: Entity
  confidence: number
  author: string
  source: Source
  teamId: string | null
  sourceMemory: string | null
  validFrom: string
  validTo: string | null
  validEnd: string | null
  createdAt: string
  recordedAt: string
  supersededBy: string | null
  supersededAt: string | null
  retractedAt: string | null
}

export interface RelateResult {
  relation: Relation
  /** False when the same relation was already current (nothing was written). */
  created: boolean
  /** Relations this one superseded (single-valued predicates). */
  superseded: string[]
}

export interface PathStep {
  relation: string
  subject: string
  predicate: string
  object: string
  /** 'forward' when the path walks subject -> object, 'backward' when it walks object -> subject. */
  direction: 'forward' | 'backward'
  confidence: number
}

export interface PathResult {
  from: Entity
  to: Entity
  paths: Array<{ hops: number, steps: PathStep[] }>
}

export interface NeighborsResult {
  entity: Entity
  neighbors: Array<{ entity: Entity, distance: number, via: PathStep }>
}

export interface Retraction {
  id: string
  target: string
  targetType: 'memory' | 'relation'
  author: string
  reason: string | null
  createdAt: string
  recordedAt: string
}

export interface VerifyProblem {
  kind: 'chain-broken' | 'log-missing' | 'row-edited' | 'row-deleted' | 'row-unlogged' | 'derived-mismatch' | 'head-mismatch' | 'bad-signature'
  table: string
  seq: number | null
  detail: string
}

export interface VerifyReport {
  ok: boolean
  entries: number
  head: string | null
  problems: VerifyProblem[]
}

export interface BrainStats {
  brainId: string
  schemaVersion: number
  memories: { total: number, current: number, superseded: number, retracted: number, byKind: Record<string, number>, byVisibility: Record<string, number>, bySource: Record<string, number> }
  entities: number
  aliases: number
  relations: { total: number, current: number }
  logEntries: number
  head: string | null
  dbBytes: number
}

export interface ImportSummary {
  lines: number
  memories: number
  relations: number
  entities: number
  retractions: number
  skipped: number
  batches: number
}

export interface ImportOptions {
  /** Called after each batch commits: everything counted so far is durable. */
  onBatch?: (progress: { committed: number, lines: number }) => void
  /** Records per transaction (default from limits.importBatchSize). */
  batchSize?: number
  source?: Source
  teamId?: string | null
}
