import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { handleRequests, MessageChannel, openChannel, ProtocolReplyError, RequestError, sendRequest, type ProtocolSpec } from '../../mesh/index.ts'
import { FetchRequest, FetchResponse } from '../../pb/sync.ts'
import { InvalidInputError, PermagentError } from '../../util/errors.ts'
import type { Logger } from '../../util/logger.ts'
import { checkReconcileOptions, DEFAULT_RECONCILE_OPTIONS, type ReconcileOptions } from './reconcile.ts'
import { ID_BYTES } from './set.ts'
import { DEFAULT_SESSION_OPTIONS, SyncSession, type AcceptResult, type GetShards, type SessionOptions, type SessionTeam, type SyncStats } from './session.ts'
import { FETCH_PROTOCOL, RESOURCE_SHARD, SYNC_LIMITS, SYNC_PROTOCOL } from './wire.ts'

/** Looks up resources of another type (e.g. RESOURCE_SKILL_BUNDLE) by id, aligned with `ids`. */
export type GetResources = (type: number, ids: Uint8Array[]) => Array<Uint8Array | undefined> | Promise<Array<Uint8Array | undefined>>

/** What the service needs of each team it syncs (the caller's store, validator and membership). */
export interface SyncTeam extends SessionTeam {
  /** Whether `peer` may sync or fetch this team (members only). Checked for both directions. */
  mayServe: (peer: PeerId, teamId: string) => boolean | Promise<boolean>
  /** Serves fetches of resource types other than shards; absent: they are refused. */
  getResources?: GetResources
  /** Size limit of one fetched resource of a type other than shards (default 1 MiB). */
  maxResourceBytes?: number
}

export interface SyncServiceOptions {
  libp2p: Libp2p
  logger: Logger
  /** Teams to serve from the start (more with addTeam). */
  teams?: Iterable<[string, SyncTeam]>
  /** Anti-entropy period: each team syncs with `peersPerRound` random connected members (default 60 s; 0: off). */
  intervalMs?: number
  peersPerRound?: number
  /** Sync every team with a member when we open a connection to it (default true). */
  syncOnConnect?: boolean
  dialTimeoutMs?: number
  /** Whole-session deadline; an unfinished session is resumed by the next one (default 5 min). */
  sessionTimeoutMs?: number
  /** Sync sessions at once, both directions; more are refused with ERR_BUSY (default 16). */
  maxSessions?: number
  /** Inbound streams per connection and protocol (default 4). */
  maxInboundStreams?: number
  /** Whole fetch exchange deadline (default 30 s). */
  fetchTimeoutMs?: number
  reconcile?: Partial<ReconcileOptions>
  session?: Partial<Omit<SessionOptions, 'reconcile'>>
  /** Called after every session, both roles, with its figures (and the error if it failed). */
  onSession?: (stats: SyncStats, error?: Error) => void
}

export interface FetchOptions {
  /** RESOURCE_SHARD (default) or another resource type the peer serves. */
  type?: number
  signal?: AbortSignal
  timeoutMs?: number
}

export interface FetchResult {
  items: Array<{ id: Uint8Array, data: Uint8Array }>
  /** Ids the peer does not hold. */
  missing: Uint8Array[]
  /** Ids the peer holds but left out to keep the response under its size limit. */
  deferred: Uint8Array[]
}

export interface SyncService {
  start: () => Promise<void>
  stop: () => Promise<void>
  addTeam: (teamId: string, team: SyncTeam) => void
  removeTeam: (teamId: string) => void
  /** Reconciles one team with one peer over one stream; resolves with the session's figures. */
  syncWith: (peer: PeerId, teamId: string, options?: { signal?: AbortSignal }) => Promise<SyncStats>
  /** Fetches resources by id from a peer (at most SYNC_LIMITS.maxFetchIds per call). */
  fetch: (peer: PeerId, teamId: string, ids: Uint8Array[], options?: FetchOptions) => Promise<FetchResult>
  /** Fetches shards by id (any number, in requests of maxFetchIds) and hands them to acceptShards. */
  fetchShards: (peer: PeerId, teamId: string, ids: Uint8Array[], options?: { signal?: AbortSignal }) => Promise<AcceptResult & { missing: Uint8Array[] }>
  /** Sessions running now (both directions). */
  activeSessions: () => number
}

/** Not a member, or a team this node does not serve: the same answer, so nothing leaks. */
const NOT_AUTHORIZED = 'ERR_NOT_AUTHORIZED'
/** The peer runs its own session with us for the same team; ours is retried after it. */
const SESSION_OVERLAP = 'ERR_SESSION_OVERLAP'
/** Refusals for overlap before a session gives up (each waits for the peer's session first). */
const MAX_OVERLAP_ATTEMPTS = 5

export function checkTeamId (teamId: unknown): string {
  if (typeof teamId !== 'string' || teamId.length === 0 || Buffer.byteLength(teamId) > SYNC_LIMITS.maxTeamIdBytes) {
    throw new InvalidInputError(`a team id is a non-empty string of at most ${SYNC_LIMITS.maxTeamIdBytes} bytes`)
  }
  return teamId
}

function checkIds (ids: Uint8Array[], limit: number): void {
  if (!Array.isArray(ids) || ids.length > limit) throw new InvalidInputError(`at most ${limit} ids per request`)
  for (const id of ids) if (!(id instanceof Uint8Array) || id.byteLength !== ID_BYTES) throw new InvalidInputError(`an id is ${ID_BYTES} bytes`)
}

const noop = (): void => {}

const hex = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex')

function fetchSpec (timeoutMs: number): ProtocolSpec<FetchRequest, FetchResponse> {
  return {
    protocol: FETCH_PROTOCOL,
    request: FetchRequest,
    response: FetchResponse,
    maxRequestBytes: SYNC_LIMITS.maxFetchIds * (ID_BYTES + 2) + SYNC_LIMITS.maxTeamIdBytes + 64,
    maxResponseBytes: SYNC_LIMITS.maxFetchResponseBytes,
    timeouts: { totalMs: timeoutMs, firstByteMs: Math.min(timeoutMs, 10_000) }
  }
}

export function createSyncService (options: SyncServiceOptions): SyncService {
  const { libp2p } = options
  const logger = options.logger
  const teams = new Map<string, SyncTeam>()
  for (const [teamId, team] of options.teams ?? []) teams.set(checkTeamId(teamId), team)
  const reconcile = checkReconcileOptions({ ...DEFAULT_RECONCILE_OPTIONS, ...options.reconcile })
  const sessionOptions: SessionOptions = { ...DEFAULT_SESSION_OPTIONS, ...options.session, reconcile }
  if (sessionOptions.batchBytes + SYNC_LIMITS.maxShardBytes + 1024 > SYNC_LIMITS.maxFrameBytes) throw new InvalidInputError('batchBytes leaves no room for one shard in a frame')
  const intervalMs = options.intervalMs ?? 60_000
  const peersPerRound = options.peersPerRound ?? 1
  const dialTimeoutMs = options.dialTimeoutMs ?? 10_000
  const sessionTimeoutMs = options.sessionTimeoutMs ?? 5 * 60_000
  const maxSessions = options.maxSessions ?? 16
  const spec = fetchSpec(options.fetchTimeoutMs ?? 30_000)

  let controller = new AbortController()
  let started = false
  let timer: NodeJS.Timeout | undefined
  let active = 0
  const lanes = new Map<string, { running: Promise<SyncStats>, queued?: Promise<SyncStats> }>()
  const running = new Set<Promise<unknown>>()
  // Two sessions between the same two nodes for the same team (each side's own: sync on connect
  // as the other dials, an explicit syncWith, a periodic round) would push the same shards twice,
  // and the receiver would verify each twice. Per (peer, team): the sessions running each way,
  // and who is waiting for an inbound one to start.
  const outbound = new Map<string, number>()
  const inbound = new Map<string, Promise<void>>()
  const inboundWaiters = new Map<string, Set<() => void>>()

  const track = <T>(promise: Promise<T>): Promise<T> => {
    running.add(promise)
    void promise.then(() => running.delete(promise), () => running.delete(promise))
    return promise
  }

  const report = (stats: SyncStats, error?: Error): void => {
    try {
      options.onSession?.(stats, error)
    } catch (err) {
      logger.warn({ err }, 'onSession callback failed')
    }
  }

  const authorised = async (team: SyncTeam | undefined, peer: PeerId, teamId: string): Promise<boolean> => {
    if (team == null) return false
    try {
      return (await team.mayServe(peer, teamId)) === true
    } catch (err) {
      logger.warn({ err, teamId }, 'mayServe failed; refusing')
      return false
    }
  }

  /** Turns aborts into typed errors and tells the peer about local failures. */
  const failure = async (session: SyncSession, err: unknown, timeout: AbortSignal): Promise<Error> => {
    let error: Error
    if (timeout.aborted) error = new RequestError('ERR_SESSION_TIMEOUT', SYNC_PROTOCOL, `the session took longer than ${sessionTimeoutMs} ms`, { cause: err })
    else if (controller.signal.aborted) error = new RequestError('ERR_ABORTED', SYNC_PROTOCOL, 'the sync service stopped', { cause: err })
    else error = err instanceof Error ? err : new Error(String(err))
    const remote = error instanceof RequestError && error.remote
    if (!remote) {
      const code = error instanceof PermagentError ? error.code : 'ERR_INTERNAL'
      const message = error instanceof PermagentError ? error.message : 'the peer failed to run the session'
      await session.sendError(code, message)
    }
    return error
  }

  /**
   * Resolves once no session the peer started with us for this team is running; when
   * `appearWithinMs` is given, first waits that long for one to start (the peer told us it runs
   * one, and its first frame may still be on the way).
   */
  const inboundSettled = async (key: string, signal: AbortSignal, appearWithinMs = 0): Promise<void> => {
    if (!inbound.has(key) && appearWithinMs > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          signal.removeEventListener('abort', done)
          inboundWaiters.get(key)?.delete(done)
          resolve()
        }
        const timer = setTimeout(done, appearWithinMs)
        signal.addEventListener('abort', done, { once: true })
        let waiters = inboundWaiters.get(key)
        if (waiters == null) inboundWaiters.set(key, waiters = new Set())
        waiters.add(done)
      })
    }
    for (let current = inbound.get(key); current != null && !signal.aborted; current = inbound.get(key)) {
      await Promise.race([current, new Promise<void>((resolve) => { signal.addEventListener('abort', () => { resolve() }, { once: true }) })])
    }
    signal.throwIfAborted()
  }

  const runOutbound = async (peer: PeerId, teamId: string, signal?: AbortSignal): Promise<SyncStats> => {
    if (!started) throw new PermagentError('ERR_NOT_STARTED', 'the sync service is not running')
    const key = `${peer.toString()}/${teamId}`
    const sessionSignal = AbortSignal.any([controller.signal, ...(signal != null ? [signal] : [])])
    for (let attempt = 1; ; attempt++) {
      // one the peer started is running: ours follows it, and finds only what it did not bring
      await inboundSettled(key, sessionSignal, attempt > 1 ? 2_000 : 0)
      outbound.set(key, (outbound.get(key) ?? 0) + 1)
      try {
        return await runOutboundSession(peer, teamId, signal)
      } catch (err) {
        // both sides started one at once and the peer's goes first (see onInbound)
        if (!(err instanceof RequestError && err.code === SESSION_OVERLAP && err.remote) || attempt >= MAX_OVERLAP_ATTEMPTS) throw err
      } finally {
        const left = (outbound.get(key) ?? 1) - 1
        if (left > 0) outbound.set(key, left)
        else outbound.delete(key)
      }
    }
  }

  const runOutboundSession = async (peer: PeerId, teamId: string, signal?: AbortSignal): Promise<SyncStats> => {
    const team = teams.get(teamId)
    if (team == null) throw new PermagentError('ERR_UNKNOWN_TEAM', `this node does not sync team ${teamId}`)
    if (!await authorised(team, peer, teamId)) throw new RequestError(NOT_AUTHORIZED, SYNC_PROTOCOL, `peer ${peer.toString()} is not a member of team ${teamId}`)
    if (active >= maxSessions) throw new RequestError('ERR_BUSY', SYNC_PROTOCOL, `already running ${active} sync sessions`)
    active++
    const timeout = AbortSignal.timeout(sessionTimeoutMs)
    const sessionSignal = AbortSignal.any([controller.signal, timeout, ...(signal != null ? [signal] : [])])
    let channel: MessageChannel | undefined
    let session: SyncSession | undefined
    try {
      channel = await openChannel(libp2p, peer, SYNC_PROTOCOL, { maxMessageBytes: SYNC_LIMITS.maxFrameBytes, dialMs: dialTimeoutMs, signal: sessionSignal })
      session = new SyncSession(channel, 'initiator', sessionOptions, sessionSignal)
      const stats = await session.initiate(teamId, team)
      logger.debug({ ...stats }, 'sync session done')
      report(stats)
      return stats
    } catch (err) {
      const error = session != null ? await failure(session, err, timeout) : err as Error
      channel?.abort(error)
      if (session != null) report(session.stats, error)
      throw error
    } finally {
      active--
    }
  }

  /**
   * One lane per (peer, team): a call while a session runs queues one follow-up session (shared by
   * every call made meanwhile), so each caller gets a session that started after its call and sees
   * what arrived before it, without sessions piling up.
   */
  const launch = (key: string, peer: PeerId, teamId: string, signal?: AbortSignal): Promise<SyncStats> => {
    const promise = track(runOutbound(peer, teamId, signal))
    const lane: { running: Promise<SyncStats>, queued?: Promise<SyncStats> } = { running: promise }
    lanes.set(key, lane)
    void promise.then(noop, noop).then(() => { if (lanes.get(key) === lane && lane.queued == null) lanes.delete(key) })
    return promise
  }

  const syncWith = async (peer: PeerId, teamId: string, syncOptions: { signal?: AbortSignal } = {}): Promise<SyncStats> => {
    checkTeamId(teamId)
    const key = `${peer.toString()}/${teamId}`
    const lane = lanes.get(key)
    if (lane == null) return await launch(key, peer, teamId, syncOptions.signal)
    lane.queued ??= lane.running.then(noop, noop).then(async () => await launch(key, peer, teamId, syncOptions.signal))
    return await lane.queued
  }

  const onInbound = async (stream: Stream, connection: Connection): Promise<void> => {
    const timeout = AbortSignal.timeout(sessionTimeoutMs)
    const signal = AbortSignal.any([controller.signal, timeout])
    const channel = new MessageChannel(SYNC_PROTOCOL, stream, connection.remotePeer, SYNC_LIMITS.maxFrameBytes)
    const session = new SyncSession(channel, 'responder', sessionOptions, signal)
    if (active >= maxSessions) {
      await session.sendError('ERR_BUSY', 'too many sync sessions; try later')
      await channel.close(AbortSignal.timeout(sessionOptions.readTimeoutMs)).catch(() => {})
      return
    }
    active++
    try {
      const open = await session.readOpen()
      const teamId = open.teamId
      const team = Buffer.byteLength(teamId) <= SYNC_LIMITS.maxTeamIdBytes ? teams.get(teamId) : undefined
      if (!await authorised(team, connection.remotePeer, teamId) || team == null) {
        logger.info({ peer: connection.remotePeer.toString() }, 'sync refused: not a member')
        await session.sendError(NOT_AUTHORIZED, 'not a member of this team')
        await channel.close(AbortSignal.timeout(sessionOptions.readTimeoutMs)).catch(() => { channel.abort(new Error('refused')) })
        return
      }
      const key = `${connection.remotePeer.toString()}/${teamId}`
      // our own session with this peer for this team runs too: the one started by the node with
      // the smaller peer id goes on, the other is refused and its initiator retries after it
      // (both sides apply the same rule, so exactly one of the two goes on)
      if ((outbound.get(key) ?? 0) > 0 && libp2p.peerId.toString() < connection.remotePeer.toString()) {
        await session.sendError(SESSION_OVERLAP, 'a session between us for this team is running; retry after it')
        await channel.close(AbortSignal.timeout(sessionOptions.readTimeoutMs)).catch(() => { channel.abort(new Error('refused')) })
        return
      }
      let finished: () => void = noop
      const done = new Promise<void>((resolve) => { finished = resolve })
      inbound.set(key, done)
      for (const wake of inboundWaiters.get(key) ?? []) wake()
      inboundWaiters.delete(key)
      const stats = await session.respond(teamId, team).finally(() => {
        if (inbound.get(key) === done) inbound.delete(key)
        finished()
      })
      logger.debug({ ...stats }, 'sync session served')
      report(stats)
    } catch (err) {
      const error = await failure(session, err, timeout)
      logger.debug({ peer: connection.remotePeer.toString(), err: error.message }, 'sync session failed')
      channel.abort(error)
      report(session.stats, error)
    } finally {
      active--
    }
  }

  const serveFetch = async (request: FetchRequest, peer: PeerId): Promise<FetchResponse> => {
    const teamId = request.teamId
    if (teamId.length === 0 || Buffer.byteLength(teamId) > SYNC_LIMITS.maxTeamIdBytes) throw new ProtocolReplyError('ERR_INVALID_MESSAGE', 'bad team id')
    if (request.ids.length > SYNC_LIMITS.maxFetchIds) throw new ProtocolReplyError('ERR_TOO_MANY_IDS', `at most ${SYNC_LIMITS.maxFetchIds} ids per request`)
    if (request.ids.some((id) => id.byteLength !== ID_BYTES)) throw new ProtocolReplyError('ERR_INVALID_MESSAGE', `an id is ${ID_BYTES} bytes`)
    const team = teams.get(teamId)
    if (!await authorised(team, peer, teamId) || team == null) throw new ProtocolReplyError(NOT_AUTHORIZED, 'not a member of this team')
    let found: Array<Uint8Array | undefined>
    let maxItemBytes: number
    if (request.resourceType === RESOURCE_SHARD) {
      found = await team.getShards(request.ids)
      maxItemBytes = SYNC_LIMITS.maxShardBytes
    } else if (team.getResources != null) {
      found = await team.getResources(request.resourceType, request.ids)
      maxItemBytes = team.maxResourceBytes ?? 1024 * 1024
    } else {
      throw new ProtocolReplyError('ERR_UNSUPPORTED_RESOURCE', `resource type ${request.resourceType} is not served`)
    }
    const response: FetchResponse = { items: [], missing: [], deferred: [] }
    let budget = SYNC_LIMITS.maxFetchResponseBytes - 16 * 1024
    request.ids.forEach((id, i) => {
      const data = found[i]
      if (data == null || data.byteLength > maxItemBytes) {
        response.missing.push(id)
      } else if (data.byteLength + ID_BYTES + 8 > budget) {
        response.deferred.push(id)
        budget = 0
      } else {
        response.items.push({ id, data: data as Uint8Array<ArrayBuffer> })
        budget -= data.byteLength + ID_BYTES + 8
      }
    })
    return response
  }

  const fetch = async (peer: PeerId, teamId: string, ids: Uint8Array[], fetchOptions: FetchOptions = {}): Promise<FetchResult> => {
    checkTeamId(teamId)
    checkIds(ids, SYNC_LIMITS.maxFetchIds)
    const type = fetchOptions.type ?? RESOURCE_SHARD
    if (!Number.isInteger(type) || type < 1 || type > 0xffff) throw new InvalidInputError('bad resource type')
    const signal = AbortSignal.any([controller.signal, ...(fetchOptions.signal != null ? [fetchOptions.signal] : [])])
    const response = await sendRequest(libp2p, peer, spec, { teamId, resourceType: type, ids: ids as Array<Uint8Array<ArrayBuffer>> }, {
      signal,
      timeouts: fetchOptions.timeoutMs != null ? { totalMs: fetchOptions.timeoutMs } : undefined
    })
    const asked = new Set(ids.map(hex))
    const answered = new Set<string>()
    const own = (id: Uint8Array, what: string): void => {
      const key = hex(id)
      if (!asked.has(key) || answered.has(key)) throw new RequestError('ERR_INVALID_MESSAGE', FETCH_PROTOCOL, `the peer answered an id it was not asked for (${what})`)
      answered.add(key)
    }
    for (const item of response.items) {
      own(item.id, 'item')
      if (type === RESOURCE_SHARD && (item.data.byteLength === 0 || item.data.byteLength > SYNC_LIMITS.maxShardBytes)) {
        throw new RequestError('ERR_INVALID_MESSAGE', FETCH_PROTOCOL, `a fetched shard of ${item.data.byteLength} bytes`)
      }
    }
    for (const id of response.missing) own(id, 'missing')
    for (const id of response.deferred) own(id, 'deferred')
    return { items: response.items, missing: response.missing, deferred: response.deferred }
  }

  const fetchShards = async (peer: PeerId, teamId: string, ids: Uint8Array[], fetchOptions: { signal?: AbortSignal } = {}): Promise<AcceptResult & { missing: Uint8Array[] }> => {
    const team = teams.get(checkTeamId(teamId))
    if (team == null) throw new PermagentError('ERR_UNKNOWN_TEAM', `this node does not sync team ${teamId}`)
    checkIds(ids, Number.MAX_SAFE_INTEGER)
    const result = { accepted: 0, rejected: 0, missing: [] as Uint8Array[] }
    let queue = [...ids]
    while (queue.length > 0) {
      const chunk = queue.slice(0, SYNC_LIMITS.maxFetchIds)
      queue = queue.slice(chunk.length)
      const response = await fetch(peer, teamId, chunk, { signal: fetchOptions.signal })
      result.missing.push(...response.missing)
      if (response.items.length > 0) {
        const accepted = await team.acceptShards(response.items.map((item) => item.data), { peer, teamId, via: 'fetch' })
        result.accepted += accepted.accepted
        result.rejected += accepted.rejected
        queue.unshift(...response.deferred)
      } else {
        // no progress: whatever was deferred cannot come in one response
        result.missing.push(...response.deferred)
      }
    }
    return result
  }

  const onConnectionOpen = (event: CustomEvent<Connection>): void => {
    const connection = event.detail
    if (connection.direction !== 'outbound' || connection.limits != null) return
    for (const teamId of teams.keys()) {
      void (async () => {
        if (!await authorised(teams.get(teamId), connection.remotePeer, teamId)) return
        await syncWith(connection.remotePeer, teamId)
      })().catch((err: Error) => { logger.debug({ peer: connection.remotePeer.toString(), teamId, err: err.message }, 'sync on connect failed') })
    }
  }

  const tick = (): void => {
    const peers = new Map<string, PeerId>()
    for (const connection of libp2p.getConnections()) if (connection.limits == null) peers.set(connection.remotePeer.toString(), connection.remotePeer)
    for (const teamId of teams.keys()) {
      void (async () => {
        const members: PeerId[] = []
        for (const peer of peers.values()) if (await authorised(teams.get(teamId), peer, teamId)) members.push(peer)
        for (let i = members.length - 1; i > 0; i--) {
          const j = Math.floor(Math.random() * (i + 1))
          ;[members[i], members[j]] = [members[j], members[i]]
        }
        await Promise.allSettled(members.slice(0, peersPerRound).map(async (peer) => {
          await syncWith(peer, teamId).catch((err: Error) => { logger.debug({ peer: peer.toString(), teamId, err: err.message }, 'periodic sync failed') })
        }))
      })()
    }
  }

  return {
    async start () {
      if (started) return
      controller = new AbortController()
      await libp2p.handle(SYNC_PROTOCOL, async (stream, connection) => { await track(onInbound(stream, connection)) }, { maxInboundStreams: options.maxInboundStreams ?? 4 })
      await handleRequests(libp2p, spec, async (request, context) => await serveFetch(request, context.remotePeer), {
        logger,
        maxInboundStreams: options.maxInboundStreams ?? 4,
        timeoutMs: options.fetchTimeoutMs ?? 30_000
      })
      started = true
      if (options.syncOnConnect !== false) libp2p.addEventListener('connection:open', onConnectionOpen)
      if (intervalMs > 0) {
        timer = setInterval(tick, intervalMs)
        timer.unref()
      }
    },
    async stop () {
      if (!started) return
      started = false
      if (timer != null) clearInterval(timer)
      timer = undefined
      libp2p.removeEventListener('connection:open', onConnectionOpen)
      controller.abort()
      await Promise.allSettled([libp2p.unhandle(SYNC_PROTOCOL), libp2p.unhandle(FETCH_PROTOCOL)])
      await Promise.allSettled([...running])
    },
    addTeam (teamId, team) {
      teams.set(checkTeamId(teamId), team)
    },
    removeTeam (teamId) {
      teams.delete(teamId)
    },
    syncWith,
    fetch,
    fetchShards,
    activeSessions: () => active
  }
}
