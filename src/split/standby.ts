import type { PeerId } from '@libp2p/interface'
import type { MessageChannel } from '../mesh/index.ts'
import { errorMessage, type Logger } from '../util/index.ts'

/** How the client opens and pings a session on a server (the standby holds no protocol of its own). */
export interface StandbyWire {
  /** Dials `peer`, negotiates the protocol and opens an empty session `sessionId`; the open channel. */
  open: (peer: PeerId, sessionId: string, signal: AbortSignal) => Promise<MessageChannel>
  /** One `info` round trip on the channel (the server's idle timer restarts with every message). */
  ping: (channel: MessageChannel, signal: AbortSignal) => Promise<void>
  /** Best-effort close of the session and its stream. */
  close: (channel: MessageChannel, sessionId: string) => Promise<void>
}

export interface StandbyOptions {
  peer: PeerId
  sessionId: string
  wire: StandbyWire
  /** Ping period: below the server's idle timeout, which drops a silent stream with its session. */
  keepAliveMs: number
  signal: AbortSignal
  logger: Logger
}

/**
 * A replacement session for one hop, opened in the background on the span's next server while
 * the primary works: empty cache, no KV bytes, kept alive by `info` pings. When the primary
 * fails, the client takes its channel and replays the span into it, skipping dial, protocol
 * negotiation and the open round trip (the slow part of a failover for small spans).
 */
export class StandbySession {
  readonly peer: PeerId
  readonly sessionId: string
  private readonly options: StandbyOptions
  private readonly controller = new AbortController()
  private readonly opening: Promise<MessageChannel | null>
  private channel: MessageChannel | null = null
  // a ping in flight must end before the channel is taken (one exchange at a time on a stream)
  private pinging: Promise<void> = Promise.resolve()
  private timer: NodeJS.Timeout | null = null
  private taken = false
  private failed = false

  constructor (options: StandbyOptions) {
    this.options = options
    this.peer = options.peer
    this.sessionId = options.sessionId
    const signal = AbortSignal.any([options.signal, this.controller.signal])
    this.opening = options.wire.open(options.peer, options.sessionId, signal).then((channel) => {
      if (this.controller.signal.aborted) {
        void options.wire.close(channel, options.sessionId)
        return null
      }
      this.channel = channel
      this.schedulePing()
      return channel
    }, (err: unknown) => {
      this.failed = true
      options.logger.debug({ peer: options.peer.toString(), err: errorMessage(err) }, 'standby session did not open')
      return null
    })
  }

  /** False once opening or a keep-alive failed: the client then replaces it the slow way. */
  get usable (): boolean {
    return !this.failed && !this.taken && !this.controller.signal.aborted
  }

  /**
   * Hands the open channel over to the caller (who replays into it), or null when the standby
   * did not open or its keep-alive failed. Waits for an open still in flight.
   */
  async take (): Promise<MessageChannel | null> {
    if (!this.usable) return null
    this.taken = true
    this.stopTimer()
    const channel = await this.opening
    await this.pinging
    if (channel === null || this.failed) return null
    this.channel = null
    return channel
  }

  /** Closes the session on its server (end of the generation, or it is no longer wanted). */
  async close (): Promise<void> {
    this.stopTimer()
    this.controller.abort(new Error('the standby is closed'))
    await this.pinging
    const channel = this.channel
    this.channel = null
    if (channel !== null && !this.taken) await this.options.wire.close(channel, this.sessionId)
  }

  private schedulePing (): void {
    this.timer = setTimeout(() => {
      this.timer = null
      const channel = this.channel
      if (channel === null || this.taken || this.controller.signal.aborted) return
      this.pinging = this.options.wire.ping(channel, AbortSignal.any([this.options.signal, this.controller.signal])).then(() => {
        this.schedulePing()
      }, (err: unknown) => {
        this.failed = true
        this.channel = null
        channel.abort(err instanceof Error ? err : new Error(String(err)))
        this.options.logger.debug({ peer: this.peer.toString(), err: errorMessage(err) }, 'standby session lost')
      })
    }, this.options.keepAliveMs)
    // a standby never keeps the process alive on its own
    this.timer.unref()
  }

  private stopTimer (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}
