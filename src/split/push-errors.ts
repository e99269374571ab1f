import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'

/** Stable codes of server-to-server push (docs/split-inference.md, "Push"). */
export const PUSH_ERRORS = {
  /** The receiver holds no session that takes pushes from this peer (forged, or the session is gone). */
  refused: 'ERR_PUSH_REFUSED',
  /** A pushing server could not hand its output to the next one; the client falls back to relaying. */
  failed: 'ERR_PUSH_FAILED',
  /** A pushed step's input did not arrive in time. */
  timeout: 'ERR_PUSH_TIMEOUT',
  /** The upstream pushed further ahead than the receiver holds. */
  backlog: 'ERR_PUSH_BACKLOG',
  /** The server did not take push_to / upstream (an older server). */
  unsupported: 'ERR_PUSH_UNSUPPORTED'
} as const

/** A peer id named in a message (push_to, upstream, client_peer), or a typed error. */
export function parsePeerField (value: string, field: string): PeerId {
  if (value.length > 128) throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `${field} is a peer id of at most 128 characters`)
  try {
    return peerIdFromString(value)
  } catch (err) {
    throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `${field} is not a peer id`, { cause: err })
  }
}
