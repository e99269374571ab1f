export { crc32c, CRC32C_IMPLEMENTATION } from './crc32c.ts'
export {
  UsxfError, UsxfTruncatedError, UsxfChecksumError, UsxfBlockHashError, UsxfSignatureError, UsxfProducerError, UsxfModelMismatchError,
  UsxfShapeMismatchError, UsxfContextExceededError, UsxfFormatError, UsxfFidelityError, UsxfProtocolError, UsxfUnknownSessionError,
  UsxfSessionBusyError, UsxfRefusedError, UsxfCommitUnknownError
} from './errors.ts'
export {
  USXF_MAJOR, USXF_MINOR, QUANTIZATIONS, DTYPES, LIMITS, layoutOf, payloadSize, encodedElementBytes, openRecord,
  type UsxfHeaderInfo, type UsxfKind, type UsxfDtype, type UsxfQuantization, type ModelIdentity, type RopeSpec, type Layout, type TrailerInfo
} from './format.ts'
export { quantizeInt8, dequantizeInt8, type PlaneData } from './blocks.ts'
export {
  UsxfEncoder, encodeStateToBytes, DEFAULT_BLOCK_TOKENS, DEFAULT_CHUNK_BYTES, DEFAULT_QUANT_GROUP,
  type UsxfSigner, type UsxfStateInput, type EncodeOptions
} from './encoder.ts'
export { UsxfDecoder, splitRecords, decodeStream, allocatePlanes, type DecodeTarget, type DecoderOptions, type DecodedState } from './decoder.ts'
export { extractKv, attachKv, allocateKv, kvPlanes, kvStateInput, checkStateFits, modelIdentity, ropeSpec, sameIdentity, cachesRange, type LayerRange } from './kv.ts'
export {
  encodeActivationFrame, decodeActivationFrame, frameBytes, FRAME_HEADER_BYTES, FRAME_OVERHEAD,
  type ActivationFrame, type FrameOptions, type FrameLimits
} from './frame.ts'
export { SessionTable, modelCatalog, sessionPositions, validateSessionId, type HostedSession, type AddSessionOptions, type ModelCatalog } from './sessions.ts'
export { greedyContinuation, compareContinuations, type Continuation, type FidelityRecord, type FidelityVerdict } from './fidelity.ts'
export { estimateWarmStart, type WarmStartEstimate, type WarmStartInput } from './estimate.ts'
export { MigrationWire, USXF_PROTOCOL, FRAME_CONTROL, FRAME_RECORD, MAX_MESSAGE_BYTES, MAX_CHUNK_BYTES, WINDOW_BYTES, type Incoming } from './wire.ts'
export { migrateSession, type MigrateOptions, type MigrationResult, type MigrationTimings } from './source.ts'
export { peerPublicKey, type InboundEvent } from './target.ts'
export {
  createMigrationService, type MigrationService, type MigrationServiceOptions, type DrainResult, type Checkpoint, type CheckpointOptions, type RestoreOptions
} from './service.ts'
