import { PermagentError } from '../util/index.ts'

/** The session's context (positions) would exceed what the stage was built for. */
export class ContextFullError extends PermagentError {
  constructor (needed: number, limit: number) {
    super('ERR_CONTEXT_FULL', `the context would reach ${needed} positions; the limit is ${limit}`)
  }
}

/** Inputs that disagree with a stage or its cache: wrong positions, shapes, layers or tokens. */
export class StageInputError extends PermagentError {
  constructor (message: string) {
    super('ERR_STAGE_INPUT', message)
  }
}

/** A KV cache snapshot that does not fit the cache it is imported into. */
export class KvCacheMismatchError extends PermagentError {
  constructor (message: string) {
    super('ERR_KV_CACHE_MISMATCH', message)
  }
}
