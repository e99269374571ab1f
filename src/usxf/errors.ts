import { PermagentError } from '../util/index.ts'

/**
 * Every USXF refusal has its own class and stable code, so a migration source learns exactly why
 * a target refused (the code crosses the wire in the protocol's error message).
 */
export class UsxfError extends PermagentError {}

/** The stream ended before its trailer, or inside a record. */
export class UsxfTruncatedError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_TRUNCATED', message)
  }
}

/** A record's CRC-32C does not match its bytes (a flipped bit in transit or at rest). */
export class UsxfChecksumError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_CHECKSUM', message)
  }
}

/** A token block's SHA-256 differs from the one the producer signed. */
export class UsxfBlockHashError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_BLOCK_HASH', message)
  }
}

/** The signature over the header and block hashes does not verify. */
export class UsxfSignatureError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_SIGNATURE', message)
  }
}

/** The stream was signed by someone other than the expected producer. */
export class UsxfProducerError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_PRODUCER', message)
  }
}

/** The state belongs to another model (config or weights hash). */
export class UsxfModelMismatchError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_MODEL_MISMATCH', message)
  }
}

/** Layers, heads, head size or rope settings disagree with the model that would receive the state. */
export class UsxfShapeMismatchError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_SHAPE_MISMATCH', message)
  }
}

/** The state holds more positions than the receiver's context allows. */
export class UsxfContextExceededError extends UsxfError {
  constructor (needed: number, limit: number) {
    super('ERR_USXF_CONTEXT_EXCEEDED', `the state needs ${needed} positions; the receiver's context holds ${limit}`)
  }
}

/** Bytes that are not USXF v1: bad magic or version, unknown record, inconsistent or oversized fields. */
export class UsxfFormatError extends UsxfError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_USXF_MALFORMED', message, options)
  }
}

/** The continuation after migration differed from the source's (a migration defect). */
export class UsxfFidelityError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_FIDELITY', message)
  }
}

/** A migration peer broke the protocol: an unexpected message, or one out of order. */
export class UsxfProtocolError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_PROTOCOL', message)
  }
}

/** No hosted session has this id. */
export class UsxfUnknownSessionError extends UsxfError {
  constructor (id: string) {
    super('ERR_USXF_UNKNOWN_SESSION', `no session ${JSON.stringify(id)}`)
  }
}

/** The session is being migrated or checkpointed, or its id is taken. */
export class UsxfSessionBusyError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_SESSION_BUSY', message)
  }
}

/** The receiver refuses: it is draining, full, or does not accept migrations from this peer. */
export class UsxfRefusedError extends UsxfError {
  constructor (message: string) {
    super('ERR_USXF_REFUSED', message)
  }
}

/**
 * The source asked the target to commit but never heard back: the session may now live on both
 * nodes. The source keeps its copy (a duplicate is recoverable, a lost session is not).
 */
export class UsxfCommitUnknownError extends UsxfError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_USXF_COMMIT_UNKNOWN', message, options)
  }
}
