import type { PeerId } from '@libp2p/interface'
import { SplitInferenceError } from './errors.ts'

/** Stable codes of a layer server's drain and hand-off (docs/split-inference.md, "Drain"). */
export const HANDOFF_ERRORS = {
  /** A step for a session this server handed to another; InferError.moved_to names it. */
  sessionMoved: 'ERR_SESSION_MOVED',
  /** The server is draining or stopping: it takes no new sessions and no hand-offs. */
  draining: 'ERR_DRAINING',
  /** The target does not take hand-offs from this server (its acceptHandoffFrom). */
  refused: 'ERR_HANDOFF_REFUSED',
  /** `open {resume: true}` with no adopted session for this client and id (never handed here, or expired). */
  notAdopted: 'ERR_NOT_ADOPTED',
  /** A hand-off message out of order, or a state that does not match its offer. */
  handoffProtocol: 'ERR_HANDOFF_PROTOCOL',
  /** The target did not adopt the session within the hand-off's deadline. */
  handoffTimeout: 'ERR_HANDOFF_TIMEOUT'
} as const

/** Thrown for a step on a session that now lives on `to`: the client resumes it there. */
export class SessionMovedError extends SplitInferenceError {
  readonly to: PeerId

  constructor (sessionId: string, to: PeerId) {
    // The peer id also ends the message, where clients that keep only code and message find it.
    super(HANDOFF_ERRORS.sessionMoved, `session ${sessionId} moved to ${to.toString()}`)
    this.to = to
  }
}
