import { PermagentError } from '../util/index.ts'

/** The model's architecture or a feature it uses is not one this engine can run. */
export class UnsupportedModelError extends PermagentError {
  constructor (message: string) {
    super('ERR_UNSUPPORTED_MODEL', message)
  }
}

/** config.json is missing, not JSON, or has values that are missing, out of range or inconsistent. */
export class ModelConfigError extends PermagentError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_MODEL_CONFIG', message, options)
  }
}

/**
 * Checkpoint files that cannot be trusted. Codes:
 * ERR_CHECKPOINT_MISSING (a shard or tensor is absent), ERR_CHECKPOINT_TRUNCATED (a file ends
 * before its data does), ERR_CHECKPOINT_OFFSETS (offsets overlap, leave gaps or disagree with the
 * tensor's size), ERR_CHECKPOINT_DTYPE (a dtype this engine does not read, or one that disagrees
 * with the rest of the checkpoint), ERR_CHECKPOINT_SHAPE (a tensor's shape disagrees with the
 * config), ERR_CHECKPOINT_HEADER (an unreadable safetensors header or shard index).
 */
export class CheckpointError extends PermagentError {
  constructor (code: 'ERR_CHECKPOINT_MISSING' | 'ERR_CHECKPOINT_TRUNCATED' | 'ERR_CHECKPOINT_OFFSETS' | 'ERR_CHECKPOINT_DTYPE' | 'ERR_CHECKPOINT_SHAPE' | 'ERR_CHECKPOINT_HEADER', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}

export class ModelNotFoundError extends PermagentError {
  constructor (name: string) {
    super('ERR_MODEL_NOT_FOUND', `no model named "${name}" in the store`)
  }
}

export class ModelExistsError extends PermagentError {
  constructor (name: string) {
    super('ERR_MODEL_EXISTS', `a model named "${name}" already exists; remove it first (model rm)`)
  }
}

/** A stored model whose files no longer match its manifest. */
export class ModelStoreCorruptError extends PermagentError {
  constructor (message: string) {
    super('ERR_MODEL_STORE_CORRUPT', message)
  }
}
