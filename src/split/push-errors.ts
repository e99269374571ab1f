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
