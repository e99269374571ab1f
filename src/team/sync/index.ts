export {
  MemoryReconcileSet, fingerprintOfIds, compareBounds, boundBetween,
  ID_BYTES, FINGERPRINT_BYTES, MAX_TIMESTAMP, START_BOUND, END_BOUND,
  type Bound, type ReconcileSet
} from './set.ts'
export {
  openingMessage, answerMessage, isFinal, checkReconcileOptions, DEFAULT_RECONCILE_OPTIONS,
  MODE_SKIP, MODE_FINGERPRINT, MODE_ID_LIST,
  type ReconcileMessage, type ReconcileRange, type ReconcileOptions, type Answer
} from './reconcile.ts'
export {
  encodeReconcile, decodeReconcile, SYNC_PROTOCOL, FETCH_PROTOCOL, SYNC_VERSION, SYNC_LIMITS, RESOURCE_SHARD, RESOURCE_SKILL_BUNDLE
} from './wire.ts'
export {
  SyncSession, DEFAULT_SESSION_OPTIONS,
  type SyncStats, type SessionOptions, type SessionTeam, type AcceptShards, type AcceptResult, type AcceptContext, type GetShards
} from './session.ts'
export {
  createSyncService, checkTeamId,
  type SyncService, type SyncServiceOptions, type SyncTeam, type GetResources, type FetchOptions, type FetchResult
} from './service.ts'
