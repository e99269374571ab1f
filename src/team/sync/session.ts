import type { PeerId } from '@libp2p/interface'
import { RequestError, type MessageChannel } from '../../mesh/index.ts'
import { SyncFrame, type SyncOpen } from '../../pb/sync.ts'
import { answerMessage, isFinal, openingMessage, type ReconcileMessage, type ReconcileOptions } from './reconcile.ts'
import type { ReconcileSet } from './set.ts'
import { decodeReconcile, encodeReconcile, protocolViolation, SYNC_LIMITS, SYNC_PROTOCOL, SYNC_VERSION, varintLength } from './wire.ts'

/** What acceptShards reports for one batch: `rejected` counts shards that failed validation. */
export interface AcceptResult {
  accepted: number
  rejected: number
}

export interface AcceptContext {
  peer: PeerId
  teamId: string
  /** 'sync' for shards pushed during reconciliation, 'fetch' for fetched ones. */
  via: 'sync' | 'fetch'
}

/** Looks shards up by id; the answer is aligned with `ids` (undefined: not held). */
export type GetShards = (ids: Uint8Array[]) => Array<Uint8Array | undefined> | Promise<Array<Uint8Array | undefined>>
/**
 * Validates and stores shards (signature, membership, schema) and adds the stored ones to the
 * team's ReconcileSet before resolving. Each call is one commit: a crash loses at most the batch
 * in progress, and the next sync fetches it again.
 */
export type AcceptShards = (shards: Uint8Array[], context: AcceptContext) => Promise<AcceptResult>

/** What a session needs of a team. */
export interface SessionTeam {
  set: ReconcileSet
  getShards: GetShards
  acceptShards: AcceptShards
}

export interface SessionOptions {
  reconcile: ReconcileOptions
  /** Deadline for each read and each write. */
  readTimeoutMs: number
  /** A pushed batch stops growing past this many bytes of shards. */
  batchBytes: number
  batchShards: number
  /** Batches in flight before the pusher waits for an acknowledgement. */
  ackWindow: number
  /** Ids per getShards call while pushing. */
  lookupChunk: number
  /** Turns (messages each way) before the session gives up; a new session continues. */
  maxTurns: number
  /** Invalid shards from one peer before the session is aborted. */
  maxRejected: number
}

export const DEFAULT_SESSION_OPTIONS: Omit<SessionOptions, 'reconcile'> = {
  readTimeoutMs: 20_000,
  // each batch is one transaction on the receiver: bigger batches, fewer commits (a commit
  // rewrites every index page the batch touched). The window stays under libp2p's 4 MiB stream
  // read buffer: 4 unacknowledged batches (2 MiB) and a reconciliation frame (<= 1 MiB).
  batchBytes: 512 * 1024,
  batchShards: 4096,
  ackWindow: 4,
  lookupChunk: 1024,
  maxTurns: 200,
  maxRejected: 10_000
}

/** Figures of one session, counted at the message-channel level (frames and their length prefixes). */
export interface SyncStats {
  peer: string
  teamId: string
  role: 'initiator' | 'responder'
  /** Round trips: answers the initiator waited for. */
  rounds: number
  bytesSent: number
  bytesReceived: number
  framesSent: number
  framesReceived: number
  shardsSent: number
  shardBytesSent: number
  shardsReceived: number
  shardBytesReceived: number
  /** Shards this side accepted / rejected (pushed to it). */
  accepted: number
  rejected: number
  /** What the peer reported for the shards this side pushed. */
  peerAccepted: number
  peerRejected: number
  durationMs: number
}

/**
 * One reconciliation over one stream. Turns alternate: in its turn a side pushes the shards the
 * peer lacks (bounded batches, at most `ackWindow` unacknowledged) and then sends its
 * reconciliation message; the other side accepts each batch, acknowledges it, and answers the
 * message. Nothing is kept between sessions, so an interrupted one is simply run again.
 */
export class SyncSession {
  readonly stats: SyncStats
  private readonly channel: MessageChannel
  private team: SessionTeam | undefined
  private readonly options: SessionOptions
  private readonly signal: AbortSignal
  private readonly started = Date.now()
  private unacknowledged = 0
  /** Batches handed to acceptShards whose acknowledgement is not sent yet, in arrival order. */
  private acceptQueue: Promise<void> = Promise.resolve()

  constructor (channel: MessageChannel, role: 'initiator' | 'responder', options: SessionOptions, signal: AbortSignal) {
    this.channel = channel
    this.options = options
    this.signal = signal
    this.stats = {
      peer: channel.remotePeer.toString(),
      teamId: '',
      role,
      rounds: 0,
      bytesSent: 0,
      bytesReceived: 0,
      framesSent: 0,
      framesReceived: 0,
      shardsSent: 0,
      shardBytesSent: 0,
      shardsReceived: 0,
      shardBytesReceived: 0,
      accepted: 0,
      rejected: 0,
      peerAccepted: 0,
      peerRejected: 0,
      durationMs: 0
    }
  }

  /** Initiator: opens with the team id and a fingerprint (or id list) of the whole set. */
  async initiate (teamId: string, team: SessionTeam): Promise<SyncStats> {
    this.stats.teamId = teamId
    this.team = team
    await this.send({ open: { version: SYNC_VERSION, teamId } })
    await this.send({ reconcile: encodeReconcile(openingMessage(team.set, this.options.reconcile)) })
    return await this.run(team)
  }

  /** Responder: reads the initiator's open frame (the caller then authorises the peer). */
  async readOpen (): Promise<SyncOpen> {
    const frame = await this.receive()
    if (frame.open == null) throw protocolViolation('a session starts with an open frame', 'ERR_PROTOCOL')
    if (frame.open.version !== SYNC_VERSION) throw protocolViolation(`protocol version ${frame.open.version} is not supported (this peer speaks ${SYNC_VERSION})`, 'ERR_UNSUPPORTED_VERSION')
    return frame.open
  }

  /** Responder: runs the session once the peer is authorised for the team. */
  async respond (teamId: string, team: SessionTeam): Promise<SyncStats> {
    this.stats.teamId = teamId
    this.team = team
    return await this.run(team)
  }

  private async run (team: SessionTeam): Promise<SyncStats> {
    for (let turn = 0; ; turn++) {
      const incoming = await this.receiveTurn()
      if (this.stats.role === 'initiator') this.stats.rounds++
      if (isFinal(incoming)) break
      if (turn >= this.options.maxTurns) throw protocolViolation(`no agreement after ${turn} turns`, 'ERR_TOO_MANY_TURNS')
      const answer = answerMessage(team.set, incoming, this.options.reconcile)
      await this.push(team, answer.push)
      await this.send({ reconcile: encodeReconcile(answer.message) })
      if (isFinal(answer.message)) {
        // the peer acknowledges our last batches, then closes
        while (this.unacknowledged > 0) await this.expectAck()
        break
      }
    }
    await this.channel.close(AbortSignal.any([this.signal, AbortSignal.timeout(this.options.readTimeoutMs)]))
    this.stats.durationMs = Date.now() - this.started
    return this.stats
  }

  async send (frame: Partial<SyncFrame>): Promise<void> {
    const bytes = SyncFrame.encode(frame)
    await this.channel.send(bytes, AbortSignal.any([this.signal, AbortSignal.timeout(this.options.readTimeoutMs)]))
    this.stats.framesSent++
    this.stats.bytesSent += bytes.byteLength + varintLength(bytes.byteLength)
  }

  /** Sends a typed error frame (best effort) before the stream is closed. */
  async sendError (code: string, message: string): Promise<void> {
    const bytes = SyncFrame.encode({ error: { code, message: message.slice(0, 1024) } })
    try {
      // its own short deadline: the session's may be what just expired
      await this.channel.send(bytes, AbortSignal.timeout(2_000))
      this.stats.framesSent++
      this.stats.bytesSent += bytes.byteLength + varintLength(bytes.byteLength)
    } catch {}
  }

  async receive (): Promise<SyncFrame> {
    const bytes = await this.channel.receive({ signal: this.signal, timeoutMs: this.options.readTimeoutMs })
    this.stats.framesReceived++
    this.stats.bytesReceived += bytes.byteLength + varintLength(bytes.byteLength)
    let frame: SyncFrame
    try {
      frame = SyncFrame.decode(bytes, { limits: { shards: { shards: SYNC_LIMITS.maxShardsPerFrame } } })
    } catch (err) {
      throw new RequestError('ERR_INVALID_MESSAGE', SYNC_PROTOCOL, 'a frame does not decode', { cause: err })
    }
    const set = [frame.open, frame.reconcile, frame.shards, frame.ack, frame.error].filter((f) => f != null).length
    if (set !== 1) throw protocolViolation(`a frame must carry exactly one message, this one carries ${set}`)
    if (frame.error != null) {
      const code = /^ERR_[A-Z0-9_]{1,60}$/.test(frame.error.code) ? frame.error.code : 'ERR_REMOTE'
      throw new RequestError(code, SYNC_PROTOCOL, `peer replied: ${frame.error.message.slice(0, 1024)}`, { remote: true })
    }
    return frame
  }

  /** Reads the peer's turn: shard batches (accepted and acknowledged), acks of ours, then its message. */
  private async receiveTurn (): Promise<ReconcileMessage> {
    for (;;) {
      const frame = await this.receive()
      if (frame.reconcile != null) {
        // every batch of this turn is stored before we reconcile against our set
        await this.acceptQueue
        return decodeReconcile(frame.reconcile)
      }
      if (frame.shards != null) {
        // hand the batch over now (its signature checks can start while earlier batches are
        // still being stored) but acknowledge in order, after it is stored
        const pending = this.startBatch(frame.shards.shards)
        const previous = this.acceptQueue
        this.acceptQueue = previous.then(async () => { await this.finishBatch(await pending) })
        // surface a failure of an earlier batch without waiting for the rest
        void this.acceptQueue.catch(() => {})
      } else if (frame.ack != null) {
        this.takeAck(frame.ack)
      } else {
        throw protocolViolation('unexpected frame in a reconciliation turn', 'ERR_PROTOCOL')
      }
    }
  }

  private startBatch (shards: Uint8Array[]): Promise<AcceptResult> {
    let bytes = 0
    for (const shard of shards) {
      if (shard.byteLength === 0 || shard.byteLength > SYNC_LIMITS.maxShardBytes) throw protocolViolation(`a pushed shard of ${shard.byteLength} bytes (limit ${SYNC_LIMITS.maxShardBytes})`, 'ERR_MESSAGE_TOO_LARGE')
      bytes += shard.byteLength
    }
    this.stats.shardsReceived += shards.length
    this.stats.shardBytesReceived += bytes
    if (this.team == null) throw protocolViolation('shards before the session opened', 'ERR_PROTOCOL')
    const accepting = this.team.acceptShards(shards, { peer: this.channel.remotePeer, teamId: this.stats.teamId, via: 'sync' })
    void accepting.catch(() => {})
    return accepting
  }

  private async finishBatch (result: AcceptResult): Promise<void> {
    const accepted = Number.isSafeInteger(result?.accepted) ? result.accepted : 0
    const rejected = Number.isSafeInteger(result?.rejected) ? result.rejected : 0
    this.stats.accepted += accepted
    this.stats.rejected += rejected
    await this.send({ ack: { accepted, rejected } })
    if (this.stats.rejected > this.options.maxRejected) {
      throw protocolViolation(`${this.stats.rejected} invalid shards; the limit per session is ${this.options.maxRejected}`, 'ERR_TOO_MANY_REJECTED')
    }
  }

  private takeAck (ack: { accepted: number, rejected: number }): void {
    if (this.unacknowledged === 0) throw protocolViolation('an acknowledgement for no batch', 'ERR_PROTOCOL')
    this.unacknowledged--
    this.stats.peerAccepted += ack.accepted
    this.stats.peerRejected += ack.rejected
  }

  private async expectAck (): Promise<void> {
    const frame = await this.receive()
    if (frame.ack == null) throw protocolViolation('expected an acknowledgement', 'ERR_PROTOCOL')
    this.takeAck(frame.ack)
  }

  /** Pushes the shards with these ids, in bounded batches with at most `ackWindow` in flight. */
  private async push (team: SessionTeam, ids: Uint8Array[]): Promise<void> {
    let batch: Uint8Array[] = []
    let batchBytes = 0
    const flush = async (): Promise<void> => {
      while (this.unacknowledged >= this.options.ackWindow) await this.expectAck()
      await this.send({ shards: { shards: batch as Array<Uint8Array<ArrayBuffer>> } })
      this.unacknowledged++
      this.stats.shardsSent += batch.length
      this.stats.shardBytesSent += batchBytes
      batch = []
      batchBytes = 0
    }
    for (let i = 0; i < ids.length; i += this.options.lookupChunk) {
      this.signal.throwIfAborted()
      const chunk = ids.slice(i, i + this.options.lookupChunk)
      const found = await team.getShards(chunk)
      if (!Array.isArray(found)) throw new TypeError('getShards must return an array aligned with the ids')
      for (let j = 0; j < chunk.length; j++) {
        const shard = found[j]
        if (shard == null || shard.byteLength === 0 || shard.byteLength > SYNC_LIMITS.maxShardBytes) continue
        if (batch.length > 0 && (batchBytes + shard.byteLength > this.options.batchBytes || batch.length >= this.options.batchShards)) await flush()
        batch.push(shard)
        batchBytes += shard.byteLength
      }
    }
    if (batch.length > 0) await flush()
  }
}
