import type { LocalModel, ModelSession } from '../inference/index.ts'
import { UsxfRefusedError, UsxfSessionBusyError, UsxfUnknownSessionError } from './errors.ts'
import type { ModelIdentity } from './format.ts'
import { modelIdentity, sameIdentity } from './kv.ts'

/** A live inference session a node hosts, which can be migrated, drained or checkpointed. */
export interface HostedSession {
  readonly id: string
  readonly model: LocalModel
  readonly session: ModelSession
  /** The next input token (sampled but not yet fed), when the host knows it. */
  pendingToken: number | null
  /** Token ids may travel with the session (headers, checkpoints); off unless the owner allows it. */
  shareTokenIds: boolean
  /** 'busy' while a migration or checkpoint holds it. */
  state: 'live' | 'busy'
  readonly createdAt: number
}

export interface AddSessionOptions {
  pendingToken?: number | null
  shareTokenIds?: boolean
}

const SESSION_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function validateSessionId (id: string): string {
  if (!SESSION_ID.test(id)) throw new UsxfRefusedError('a session id is 1-128 letters, digits, ".", "_", ":" or "-"')
  return id
}

/** Positions a session holds (its caches' length, whether or not its token history is known). */
export function sessionPositions (session: ModelSession): number {
  return session.caches.length > 0 ? session.caches[0].length : 0
}

/** The sessions a node hosts, by id. */
export class SessionTable {
  private readonly sessions = new Map<string, HostedSession>()
  private accepting = true
  /** Most sessions hosted at once; inbound migrations are refused at the offer when it is reached. */
  readonly capacity: number

  constructor (options: { capacity?: number } = {}) {
    const capacity = options.capacity ?? Number.POSITIVE_INFINITY
    if (!(capacity >= 1)) throw new UsxfRefusedError('a session table holds at least one session')
    this.capacity = capacity
  }

  get size (): number {
    return this.sessions.size
  }

  /** Whether new sessions are accepted (false while draining). */
  get open (): boolean {
    return this.accepting
  }

  add (id: string, model: LocalModel, session: ModelSession, options: AddSessionOptions = {}): HostedSession {
    validateSessionId(id)
    if (!this.accepting) throw new UsxfRefusedError('this node is draining and takes no new sessions')
    if (this.sessions.has(id)) throw new UsxfSessionBusyError(`session ${id} already exists`)
    const hosted: HostedSession = { id, model, session, pendingToken: options.pendingToken ?? null, shareTokenIds: options.shareTokenIds ?? false, state: 'live', createdAt: Date.now() }
    this.sessions.set(id, hosted)
    return hosted
  }

  has (id: string): boolean {
    return this.sessions.has(id)
  }

  get (id: string): HostedSession | undefined {
    return this.sessions.get(id)
  }

  require (id: string): HostedSession {
    const hosted = this.sessions.get(id)
    if (hosted === undefined) throw new UsxfUnknownSessionError(id)
    return hosted
  }

  list (): HostedSession[] {
    return [...this.sessions.values()]
  }

  /** Marks a live session busy (migration, checkpoint); throws if it already is. */
  acquire (id: string): HostedSession {
    const hosted = this.require(id)
    if (hosted.state !== 'live') throw new UsxfSessionBusyError(`session ${id} is being migrated`)
    hosted.state = 'busy'
    return hosted
  }

  /** Hands a busy session back to its users. */
  releaseHold (id: string): void {
    const hosted = this.sessions.get(id)
    if (hosted !== undefined) hosted.state = 'live'
  }

  /** Removes a session and frees its caches. */
  remove (id: string): boolean {
    const hosted = this.sessions.get(id)
    if (hosted === undefined) return false
    this.sessions.delete(id)
    hosted.session.reset()
    return true
  }

  setAccepting (accepting: boolean): void {
    this.accepting = accepting
  }
}

/**
 * Finds a model by the identity a USXF header names. It may answer later: a node can open a stored
 * model only when a migration or checkpoint for it arrives.
 */
export interface ModelCatalog {
  find: (identity: ModelIdentity) => LocalModel | undefined | Promise<LocalModel | undefined>
}

export function modelCatalog (models: Iterable<LocalModel>): ModelCatalog {
  const list = [...models]
  return { find: (identity) => list.find((m) => sameIdentity(modelIdentity(m.manifest), identity)) }
}
