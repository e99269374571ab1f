import { PermagentError } from '../util/index.ts'

/** No session with this id is hosted here. */
export class SessionNotFoundError extends PermagentError {
  constructor (id: string) {
    super('ERR_SESSION_NOT_FOUND', `no session ${JSON.stringify(id)} on this node (see permagent session list)`)
  }
}

/** The session is generating, migrating or expiring, and takes one operation at a time. */
export class SessionBusyError extends PermagentError {
  constructor (message: string) {
    super('ERR_SESSION_BUSY', message)
  }
}

/** The node already hosts as many sessions as it allows. */
export class SessionLimitError extends PermagentError {
  constructor (limit: number) {
    super('ERR_SESSION_LIMIT', `this node hosts its limit of ${limit} sessions; close one first (permagent session close ID)`)
  }
}

/** A migration target that is not connected to this node (sessions move only over open connections). */
export class PeerNotConnectedError extends PermagentError {
  constructor (peer: string) {
    super('ERR_PEER_NOT_CONNECTED', `peer ${peer} is not connected to this node; connect first (permagent connect MULTIADDR)`)
  }
}

/** The node is draining (or drained) and takes no new sessions. */
export class SessionRefusedError extends PermagentError {
  constructor (message: string) {
    super('ERR_SESSION_REFUSED', message)
  }
}
