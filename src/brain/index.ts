export { createBrain, BRAIN_FILE, type Brain, type BrainOptions } from './brain.ts'
export type { Durability } from './db.ts'
export { DEFAULT_LIMITS, type BrainLimits } from './limits.ts'
export { DEFAULT_ONTOLOGY, buildOntology, loadOntologyFile, type Ontology, type OntologyDefinition } from './ontology.ts'
export { DEFAULT_RECALL_TUNING, type RecallTuning } from './recall.ts'
export type { BulkResult } from './memories.ts'
export { defaultSigningThreads } from './sign-pool.ts'
export type { PathOptions, NeighborOptions } from './paths.ts'
export { parseTime, type TimeInput } from './time.ts'
export {
  NotFoundError, UnknownTypeError, UnknownPredicateError, OntologyViolationError, InvalidDateError,
  AmbiguousEntityError, BadSignatureError, ImportLineError, SchemaVersionError, BrainClosedError
} from './errors.ts'
export {
  VISIBILITIES, SOURCES, DEFAULT_KINDS,
  type Visibility, type Source, type RememberInput, type RememberResult, type Memory, type AsOf, type RecallOptions,
  type RecallHit, type RecallResult, type EntityRef, type Entity, type RelateInput, type Relation, type RelateResult,
  type PathStep, type PathResult, type NeighborsResult, type Retraction, type VerifyProblem, type VerifyReport,
  type BrainStats, type ImportSummary, type ImportOptions
} from './types.ts'
