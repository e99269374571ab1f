export {
  createSessionHost, DEFAULT_SESSION_HOST_LIMITS,
  type SessionHost, type SessionHostOptions, type SessionHostLimits, type SessionMigrationSettings, type CreateSessionRequest, type GenerateSessionRequest,
  type SessionView, type GenerationStep, type HostMigrateOptions
} from './host.ts'
export { createStoredModels, type StoredModels, type StoredModelsOptions } from './stored-models.ts'
export { SessionNotFoundError, SessionBusyError, SessionLimitError, SessionRefusedError, PeerNotConnectedError } from './errors.ts'
