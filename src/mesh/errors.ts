import { PermagentError } from '../util/errors.ts'

/**
 * A request/response exchange failed. `code` names the phase or cause so callers can decide to
 * retry, ban the peer or give up: ERR_DIAL_TIMEOUT, ERR_FIRST_BYTE_TIMEOUT, ERR_RESPONSE_TIMEOUT,
 * ERR_MESSAGE_TOO_LARGE, ERR_INVALID_MESSAGE, ERR_STREAM_CLOSED, ERR_DIAL_FAILED, or the remote's
 * own error code (then `remote` is true).
 */
export class RequestError extends PermagentError {
  readonly protocol: string
  readonly remote: boolean

  constructor (code: string, protocol: string, message: string, options?: { cause?: unknown, remote?: boolean }) {
    super(code, `${protocol}: ${message}`, options)
    this.protocol = protocol
    this.remote = options?.remote ?? false
  }
}

/** Thrown by a protocol handler to send a typed error reply instead of a response. */
export class ProtocolReplyError extends PermagentError {}

/** A multiaddr string that does not parse, or names no peer where one is needed. */
export class InvalidMultiaddrError extends PermagentError {
  constructor (value: string, reason: string) {
    super('ERR_INVALID_MULTIADDR', `"${value}" is not a valid multiaddr: ${reason}`)
  }
}
