import type { KvCache } from '../inference/index.ts'

/** A session handed to this server, held for its client until it resumes or the hold expires. */
export interface AdoptedSession {
  /** `${client peer}/${session id}`, as live sessions are keyed. */
  key: string
  sessionId: string
  cache: KvCache
  maxLength: number
  nextStep: number
  /** The server that handed it over. */
  from: string
}

/**
 * Sessions handed to this server and not yet claimed by their client, plus the keys of hand-offs
 * in flight (reserved, so two cannot race for one key and capacity counts them). An adopted session
 * the client does not resume within `holdMs` is dropped with its cache.
 */
export class AdoptedSessions {
  private readonly holdMs: number
  private readonly onExpire: (session: AdoptedSession) => void
  private readonly held = new Map<string, { session: AdoptedSession, timer: NodeJS.Timeout }>()
  private readonly reserved = new Map<string, string>()

  constructor (holdMs: number, onExpire: (session: AdoptedSession) => void) {
    this.holdMs = holdMs
    this.onExpire = onExpire
  }

  /** Held and reserved sessions: each holds, or is about to hold, a cache. */
  get size (): number {
    return this.held.size + this.reserved.size
  }

  /** Adopted sessions waiting for their client. */
  get waiting (): number {
    return this.held.size
  }

  /** Who holds `key` here: a hand-off in flight or an adopted session, and from which server. */
  holder (key: string): { state: 'reserved' | 'adopted', from: string } | null {
    const reserved = this.reserved.get(key)
    if (reserved !== undefined) return { state: 'reserved', from: reserved }
    const held = this.held.get(key)
    return held !== undefined ? { state: 'adopted', from: held.session.from } : null
  }

  reserve (key: string, from: string): void {
    this.reserved.set(key, from)
  }

  unreserve (key: string): void {
    this.reserved.delete(key)
  }

  /** The reservation becomes an adopted session, dropped after the hold unless claimed. */
  adopt (session: AdoptedSession): void {
    this.reserved.delete(session.key)
    this.drop(session.key)
    const timer = setTimeout(() => {
      if (this.held.get(session.key)?.session !== session) return
      this.held.delete(session.key)
      this.onExpire(session)
    }, this.holdMs)
    // a held session must not keep the process alive
    timer.unref()
    this.held.set(session.key, { session, timer })
  }

  peek (key: string): AdoptedSession | undefined {
    return this.held.get(key)?.session
  }

  /** Takes the session out (its client resumed it). */
  claim (key: string): AdoptedSession | undefined {
    const held = this.held.get(key)
    if (held === undefined) return undefined
    clearTimeout(held.timer)
    this.held.delete(key)
    return held.session
  }

  drop (key: string): void {
    const held = this.held.get(key)
    if (held === undefined) return
    clearTimeout(held.timer)
    this.held.delete(key)
  }

  clear (): void {
    for (const { timer } of this.held.values()) clearTimeout(timer)
    this.held.clear()
    this.reserved.clear()
  }
}
