import { PermagentError } from '../util/index.ts'

/**
 * An error of the split-inference protocol. Servers reply with `code` and keep serving; clients
 * throw it with the server's code (`remote: true`) or their own.
 */
export class SplitInferenceError extends PermagentError {
  readonly remote: boolean
  /** ERR_SESSION_MOVED replies: the peer id the server handed the session to (InferError.moved_to). */
  readonly movedTo: string | null

  constructor (code: string, message: string, options: { remote?: boolean, cause?: unknown, movedTo?: string } = {}) {
    super(code, message, { cause: options.cause })
    this.remote = options.remote ?? false
    this.movedTo = options.movedTo != null && options.movedTo !== '' ? options.movedTo : null
  }
}

/** Stable codes of /permagent/infer/1.0.0 (docs/split-inference.md). */
export const INFER_ERRORS = {
  wrongModel: 'ERR_WRONG_MODEL',
  wrongSpan: 'ERR_WRONG_SPAN',
  outOfOrder: 'ERR_OUT_OF_ORDER',
  tensorTooLarge: 'ERR_TENSOR_TOO_LARGE',
  unknownSession: 'ERR_UNKNOWN_SESSION',
  sessionExists: 'ERR_SESSION_EXISTS',
  serverFull: 'ERR_SERVER_FULL',
  peerRefused: 'ERR_PEER_REFUSED',
  maxLength: 'ERR_MAX_LENGTH',
  protocol: 'ERR_INFER_PROTOCOL',
  invalidMessage: 'ERR_INVALID_MESSAGE',
  internal: 'ERR_INTERNAL',
  noRoute: 'ERR_NO_ROUTE',
  serverFailed: 'ERR_SERVER_FAILED'
} as const
