import { randomBytes } from 'node:crypto'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Database } from 'better-sqlite3'
import type { Identity } from '../identity/index.ts'
import type { MeshNode } from '../mesh/index.ts'
import { isPermagentError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { encodeCanonicalJson } from './canonical-json.ts'
import { InviteError, ShardRejectedError, TeamError, UnknownTeamError } from './errors.ts'
import { createHybridClock, type HybridClock } from './hlc.ts'
import { buildJoinOp, issueInvite, parseInviteToken } from './invite.ts'
import { JOIN_PROTOCOL, sendJoin, serveJoins } from './join-protocol.ts'
import { computeMembership, deriveTeamId, encodeMembershipOp, type MembershipOp, type MembershipView, type Role } from './membership.ts'
import { createShard, decodeShard, type Shard, type ShardKind, type ShardVisibility } from './shard.ts'
import { openShardStore, type ShardStore, type TeamRow } from './store.ts'
import { createSyncService, MemoryReconcileSet, RESOURCE_SKILL_BUNDLE, type FetchResult, type SyncService, type SyncStats } from './sync/index.ts'
import { teamTopic } from './topics.ts'
import { validateShard, type AcceptedShard } from './validator.ts'
import { createVerifyPool, type VerifyPool } from './verify-pool.ts'

/** How the brain takes part: it checks record bodies and indexes accepted records for recall. */
export interface TeamMemoryPort {
  checkBody: (shard: Shard) => void
  /** Indexes the records of newly accepted shards (before they are stored); returns shard id → brain record id. */
  ingest: (shards: Shard[]) => Map<string, string>
}

/** How the skills module takes part: it checks skill shard bodies and serves skill bundles by id. */
export interface TeamSkillPort {
  checkBody: (shard: Shard) => void
  /** Bundles by id for a member of `teamId`, aligned with `ids` (undefined: not held, or not announced in that team). */
  getBundles: (teamId: string, ids: Uint8Array[]) => Promise<Array<Uint8Array | undefined>>
  /** Size limit of one bundle, both served and fetched. */
  maxBundleBytes: number
}

export interface TeamServiceOptions {
  identity: Identity
  mesh: MeshNode
  db: Database
  logger: Logger
  memories?: TeamMemoryPort
  /** Shards dated further in the future than this are refused (default 5 minutes). */
  maxClockSkewMs?: number
  now?: () => number
  /** Per-author trust weights (brain id → weight, default 1) applied to team recall ranking. */
  trust?: Record<string, number>
  /** Non-members admitted while an invite is outstanding are disconnected after this (default 60 s). */
  admissionGraceMs?: number
  /** Anti-entropy period in ms (default 60 s; 0 turns periodic sync off; sync on connect stays). */
  syncIntervalMs?: number
}

export interface AcceptResult {
  accepted: Shard[]
  duplicates: number
  rejected: Array<{ code: string, message: string }>
}

export interface MemberInfo {
  brainId: string
  publicKey: string
  role: Role
  active: boolean
  since: string
}

export interface ShardProvenance {
  shardId: string
  teamId: string
  author: string
  time: string
  supersededBy: string[]
  disputes: Array<{ disputeId: string, author: string, reason: string, at: string }>
}

export interface TeamService {
  start: () => Promise<void>
  stop: () => Promise<void>
  createTeam: (name: string, options?: { teamOnly?: boolean }) => Promise<{ teamId: string, name: string }>
  createInvite: (teamId: string, options?: { role?: Role, expiresInMs?: number, bootstrap?: string[] }) => Promise<{ token: string, expiresAt: string }>
  join: (token: string) => Promise<{ teamId: string, name: string }>
  teams: () => Array<TeamRow & { members: number }>
  members: (teamId: string) => MemberInfo[]
  removeMember: (teamId: string, member: string) => Promise<void>
  setTeamOnly: (teamId: string, teamOnly: boolean) => void
  /** Signs, stores and gossips a shard of this node's own. */
  publish: (teamId: string, kind: ShardKind, body: Uint8Array, visibility: ShardVisibility, supersedes?: string[]) => Promise<Shard>
  dispute: (teamId: string, shardId: string, reason: string) => Promise<Shard>
  /** Validates and stores shards from outside (gossip, sync, fetch). */
  acceptShards: (shards: Uint8Array[], origin: string, expectedTeam?: string, verified?: boolean[], decoded?: Array<Shard | undefined>) => AcceptResult
  /** Like acceptShards, for large batches: signatures are checked on worker threads first. */
  acceptShardsParallel: (shards: Uint8Array[], origin: string, expectedTeam?: string) => Promise<AcceptResult>
  provenance: (shardId: string) => ShardProvenance | undefined
  shardOfRecord: (recordId: string) => string | undefined
  trustOf: (brainId: string) => number
  membership: (teamId: string) => MembershipView | undefined
  isMember: (teamId: string, peer: PeerId) => boolean
  /** Reconciles a team with one peer now (anti-entropy runs on connect and periodically anyway). */
  syncWith: (peer: PeerId, teamId: string, options?: { signal?: AbortSignal }) => Promise<SyncStats>
  /** Attaches the brain (checks and indexes record bodies); set before start. */
  setMemoryPort: (port: TeamMemoryPort) => void
  /** Attaches the skills module (checks skill shard bodies, serves bundles); set before start. */
  setSkillPort: (port: TeamSkillPort) => void
  /** Stored shards of one kind in a team, in (hlc, id) order. */
  shardsOfKind: (teamId: string, kind: ShardKind) => Shard[]
  /** Fetches skill bundles by id (at most 256) from a member over /permagent/fetch/1.0.0. */
  fetchSkillBundles: (peer: PeerId, teamId: string, ids: Uint8Array[], options?: { signal?: AbortSignal, timeoutMs?: number }) => Promise<FetchResult>
  readonly store: ShardStore
  readonly clock: HybridClock
  /**
   * Fires 'shard' (detail: Shard) for every newly stored shard, and 'sync' (detail: { stats:
   * SyncStats, error?: Error }) after every sync session, both roles.
   */
  readonly events: EventTarget
}

const DEFAULT_INVITE_MS = 7 * 24 * 3600 * 1000

function keyOfPeer (peer: PeerId): string | undefined {
  const raw = peer.publicKey?.raw
  return raw != null && raw.length === 32 ? Buffer.from(raw).toString('hex') : undefined
}

export function createTeamService (options: TeamServiceOptions): TeamService {
  const { identity, mesh, logger } = options
  const now = options.now ?? Date.now
  const maxClockSkewMs = options.maxClockSkewMs ?? 5 * 60_000
  const store = openShardStore(options.db)
  const clock = createHybridClock(now)
  const events = new EventTarget()
  const membershipCache = new Map<string, MembershipView>()
  const ownKey = Buffer.from(identity.publicKey).toString('hex')
  const outstandingInvites = new Map<string, number>() // invite key -> expiry, for team-only admission
  let admissionTimer: NodeJS.Timeout | undefined
  let running = false
  const reconcileSets = new Map<string, MemoryReconcileSet>()
  const recentOwnMembership = new Map<string, Shard>() // team -> our latest membership op, re-gossiped to new subscribers
  const sync: SyncService = createSyncService({
    libp2p: mesh.libp2p,
    logger: logger.child({ component: 'sync' }),
    intervalMs: options.syncIntervalMs ?? 60_000,
    onSession: (stats, error) => { events.dispatchEvent(new CustomEvent('sync', { detail: { stats, error } })) }
  })

  const reconcileSet = (teamId: string): MemoryReconcileSet => {
    let set = reconcileSets.get(teamId)
    if (set == null) {
      set = new MemoryReconcileSet()
      for (const { timestamp, id } of store.index(teamId)) set.add(timestamp, Buffer.from(id, 'hex'))
      reconcileSets.set(teamId, set)
    }
    return set
  }

  const membership = (teamId: string): MembershipView | undefined => {
    if (store.team(teamId) == null) return undefined
    let view = membershipCache.get(teamId)
    if (view == null) {
      view = computeMembership(teamId, store.membershipShards(teamId))
      membershipCache.set(teamId, view)
    }
    return view
  }

  let memories = options.memories
  let skills: TeamSkillPort | undefined
  const context = {
    store,
    membership,
    now,
    maxClockSkewMs,
    checkBody: (shard: Shard) => { if (shard.kind === 'skill') skills?.checkBody(shard); else memories?.checkBody(shard) },
    // a subscribed team's reconciliation set holds exactly its stored shards (built from the
    // store, and every commit adds to it): a lookup there spares a B-tree probe per shard
    isStored: (shard: Shard) => {
      const set = reconcileSets.get(shard.teamId)
      return set != null ? set.has(shard.hlc.wallMs, Buffer.from(shard.id, 'hex')) : store.has(shard.id)
    }
  }
  const shardsOfKindStatement = options.db.prepare('SELECT bytes FROM team_shards WHERE team_id = ? AND kind = ? ORDER BY hlc_wall, id').pluck()

  const commit = (items: AcceptedShard[], origin: string): Shard[] => {
    // the brain indexes the records first, in its own transaction (brain.db on its own
    // connection): a crash between the two leaves a record without its shard, and the next sync
    // brings the shard again (the brain's import is idempotent), so nothing is lost or doubled
    const content = items.map((i) => i.shard).filter((s) => s.kind === 'memory' || s.kind === 'relation' || s.kind === 'retraction')
    const links = content.length > 0 && memories != null ? memories.ingest(content) : new Map<string, string>()
    const freshIds = store.insert(items.map((i) => ({ ...i, origin })), (fresh) => {
      for (const shard of fresh) {
        const recordId = links.get(shard.id)
        if (recordId != null) store.setRecordId(shard.id, recordId)
      }
    })
    const freshSet = new Set(freshIds)
    const fresh = items.map((i) => i.shard).filter((s) => freshSet.has(s.id))
    for (const shard of fresh) {
      clock.observe(shard.hlc)
      reconcileSets.get(shard.teamId)?.add(shard.hlc.wallMs, Buffer.from(shard.id, 'hex'))
      if (shard.kind === 'membership') {
        membershipCache.delete(shard.teamId)
        onMembershipChange(shard)
      }
    }
    for (const shard of fresh) events.dispatchEvent(new CustomEvent('shard', { detail: shard }))
    return fresh
  }

  let verifyPool: VerifyPool | undefined
  // batches below this size are verified inline: a round trip to a worker costs more
  const PARALLEL_MIN_BATCH = 64

  // Batches may arrive while earlier ones are still being verified: each is verified as soon as it
  // arrives, and stored in arrival order. Batches that are verified by the time the one before
  // them is stored go into one transaction together (from the same origin, for the same team):
  // a commit rewrites every page of the id index that its shards touched, and shard ids are
  // random, so a few large commits write far fewer pages than many small ones. Each batch's
  // answer (and so its acknowledgement to the peer) still comes only after it is stored.
  interface WaitingBatch {
    list: Uint8Array[]
    origin: string
    expectedTeam?: string
    prepared?: { verified?: boolean[], decoded?: Array<Shard | undefined> }
    resolve: (result: AcceptResult) => void
    reject: (err: unknown) => void
  }
  const arrivals: WaitingBatch[] = []
  // the most shards stored in one transaction (a bound on the time the event loop is held)
  const MAX_GROUP_SHARDS = 8192
  const storeReadyBatches = (): void => {
    while (arrivals.length > 0 && arrivals[0].prepared != null) {
      const group = [arrivals.shift() as WaitingBatch]
      let shards = group[0].list.length
      while (arrivals.length > 0 && arrivals[0].prepared != null && arrivals[0].origin === group[0].origin &&
        arrivals[0].expectedTeam === group[0].expectedTeam && shards + arrivals[0].list.length <= MAX_GROUP_SHARDS) {
        const next = arrivals.shift() as WaitingBatch
        shards += next.list.length
        group.push(next)
      }
      try {
        // index by index (not flatMap, which would close up the gaps of shards the workers failed)
        const list: Uint8Array[] = []
        const verified: boolean[] = []
        const decoded: Array<Shard | undefined> = []
        for (const batch of group) {
          for (let i = 0; i < batch.list.length; i++) {
            list.push(batch.list[i])
            verified.push(batch.prepared?.verified?.[i] === true)
            decoded.push(batch.prepared?.decoded?.[i])
          }
        }
        const { outcomes } = acceptIndexed(list, group[0].origin, group[0].expectedTeam, verified, decoded)
        let offset = 0
        for (const batch of group) {
          const result: AcceptResult = { accepted: [], duplicates: 0, rejected: [] }
          for (let i = offset; i < offset + batch.list.length; i++) {
            const outcome = outcomes[i]
            if (outcome.accepted != null) result.accepted.push(outcome.accepted)
            else if (outcome.rejected != null) result.rejected.push(outcome.rejected)
            else result.duplicates++
          }
          offset += batch.list.length
          batch.resolve(result)
        }
      } catch (err) {
        for (const batch of group) batch.reject(err)
      }
    }
  }
  const acceptShardsParallel = async (list: Uint8Array[], origin: string, expectedTeam?: string): Promise<AcceptResult> => {
    return await new Promise<AcceptResult>((resolve, reject) => {
      const batch: WaitingBatch = { list, origin, expectedTeam, resolve, reject }
      arrivals.push(batch)
      prepareBatch(list).then((prepared) => { batch.prepared = prepared }, () => { batch.prepared = {} }).finally(storeReadyBatches)
    })
  }

  const prepareBatch = async (list: Uint8Array[]): Promise<{ verified?: boolean[], decoded?: Array<Shard | undefined> }> => {
    if (list.length < PARALLEL_MIN_BATCH) return {}
    verifyPool ??= createVerifyPool()
    // the workers run the whole decode and the signature check; here only the structure is
    // decoded again. A shard that failed there is left undecoded and unverified, so
    // validateShard checks it from scratch and rejects it with the reason.
    const checked = await verifyPool.checkShards(list)
    const verified: boolean[] = new Array(list.length).fill(false)
    const decoded: Array<Shard | undefined> = new Array(list.length).fill(undefined)
    for (let i = 0; i < list.length; i++) {
      const checkedId = checked[i]
      if (checkedId === undefined) continue
      try {
        decoded[i] = decodeShard(list[i], { verify: false, checkedId })
        verified[i] = true
      } catch {}
    }
    return { verified, decoded }
  }

  interface ShardOutcome { accepted?: Shard, rejected?: { code: string, message: string } }

  const acceptShards = (list: Uint8Array[], origin: string, expectedTeam?: string, verified?: boolean[], decodedList?: Array<Shard | undefined>): AcceptResult => {
    return acceptIndexed(list, origin, expectedTeam, verified, decodedList).result
  }

  /** acceptShards, also telling what became of each input (neither accepted nor rejected: a duplicate). */
  const acceptIndexed = (list: Uint8Array[], origin: string, expectedTeam?: string, verified?: boolean[], decodedList?: Array<Shard | undefined>): { result: AcceptResult, outcomes: ShardOutcome[] } => {
    const result: AcceptResult = { accepted: [], duplicates: 0, rejected: [] }
    const outcomes: ShardOutcome[] = list.map(() => ({}))
    const reject = (index: number, err: { code: string, message: string }): void => {
      const reason = { code: err.code, message: err.message }
      outcomes[index].rejected = reason
      result.rejected.push(reason)
    }
    const stored = (items: Array<{ item: AcceptedShard, index: number }>): void => {
      const fresh = new Set(commit(items.map((i) => i.item), origin))
      for (const { item, index } of items) {
        if (fresh.has(item.shard)) {
          outcomes[index].accepted = item.shard
          result.accepted.push(item.shard)
        } else {
          result.duplicates++
        }
      }
    }
    // decode once (structure only); signatures are checked in validateShard unless verified
    const decoded = decodedList ?? list.map((bytes) => { try { return decodeShard(bytes, { verify: false }) } catch { return undefined } })
    // membership first, one at a time: a batch may carry a join and the new member's shards
    const decodedKinds = decoded.map((shard) => shard?.kind)
    const order = list.map((_, i) => i).sort((a, b) => (decodedKinds[a] === 'membership' ? 0 : 1) - (decodedKinds[b] === 'membership' ? 0 : 1))
    const pending: Array<{ item: AcceptedShard, index: number }> = []
    const seen = new Set<string>()
    for (const index of order) {
      try {
        const accepted = validateShard(list[index], context, expectedTeam, verified?.[index] === true, decoded[index])
        if (accepted == null || seen.has(accepted.shard.id)) { result.duplicates++; continue }
        seen.add(accepted.shard.id)
        if (accepted.shard.kind === 'membership') {
          stored([{ item: accepted, index }])
        } else {
          pending.push({ item: accepted, index })
        }
      } catch (err) {
        if (!isPermagentError(err)) throw err
        reject(index, err)
      }
    }
    if (pending.length > 0) {
      try {
        stored(pending)
      } catch (err) {
        // the brain refused a body inside the transaction: nothing of the batch was stored;
        // retry one by one so one bad shard does not sink the others
        if (!isPermagentError(err)) throw err
        if (pending.length === 1) {
          reject(pending[0].index, err)
          return { result, outcomes }
        }
        for (const one of pending) {
          try {
            stored([one])
          } catch (inner) {
            if (!isPermagentError(inner)) throw inner
            reject(one.index, inner)
          }
        }
      }
    }
    return { result, outcomes }
  }

  const subscribe = (teamId: string): void => {
    const topic = teamTopic(teamId)
    const pubsub = mesh.libp2p.services.pubsub
    pubsub.topicValidators.set(topic, (peer, message) => {
      if (message.type !== 'signed' || message.topic !== topic) return TopicValidatorResult.Reject
      const result = acceptShards([message.data], peer.toString(), teamId)
      if (result.rejected.length > 0) {
        logger.debug({ peer: peer.toString(), teamId, reason: result.rejected[0] }, 'rejected gossiped shard')
        return TopicValidatorResult.Reject
      }
      return result.accepted.length > 0 ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    })
    pubsub.subscribe(topic)
    sync.addTeam(teamId, {
      set: reconcileSet(teamId),
      getShards: (ids) => {
        const found = store.getBytes(ids.map((id) => Buffer.from(id).toString('hex')))
        return ids.map((id) => found.get(Buffer.from(id).toString('hex')))
      },
      acceptShards: async (shards, acceptContext) => {
        const result = await acceptShardsParallel(shards, acceptContext.peer.toString(), acceptContext.teamId)
        if (result.accepted.length > 0) scheduleCascade(acceptContext.teamId, acceptContext.peer)
        return { accepted: result.accepted.length, rejected: result.rejected.length }
      },
      mayServe: (peer, id) => isMember(id, peer),
      ...(skills != null ? { getResources: async (type: number, ids: Uint8Array[]) => type === RESOURCE_SKILL_BUNDLE && skills != null ? await skills.getBundles(teamId, ids) : ids.map(() => undefined), maxResourceBytes: skills.maxBundleBytes } : {})
    })
  }

  // shards learned by sync (not gossip) reach our other neighbours by syncing with them in turn,
  // so a healed partition converges hop by hop without re-gossiping old shards
  const cascades = new Map<string, { timer: NodeJS.Timeout, sources: Set<string> }>()
  const scheduleCascade = (teamId: string, source: PeerId): void => {
    if (!running) return
    const pending = cascades.get(teamId)
    if (pending != null) { pending.sources.add(source.toString()); return }
    const sources = new Set([source.toString()])
    const timer = setTimeout(() => {
      cascades.delete(teamId)
      for (const peer of mesh.libp2p.getPeers()) {
        if (sources.has(peer.toString()) || !isMember(teamId, peer)) continue
        void sync.syncWith(peer, teamId, { signal: AbortSignal.timeout(120_000) }).catch((err) => {
          logger.debug({ err: (err as Error).message, teamId }, 'cascade sync failed')
        })
      }
    }, 200)
    timer.unref()
    cascades.set(teamId, { timer, sources })
  }

  const pendingSyncs = new Map<string, { timer: NodeJS.Timeout, peers: Map<string, PeerId> }>()
  const scheduleSync = (teamId: string, peers: PeerId[]): void => {
    if (!running) return
    let pending = pendingSyncs.get(teamId)
    if (pending == null) {
      const entry = { peers: new Map<string, PeerId>(), timer: setTimeout(() => {
        pendingSyncs.delete(teamId)
        for (const peer of entry.peers.values()) {
          void sync.syncWith(peer, teamId, { signal: AbortSignal.timeout(120_000) }).catch((err) => {
            logger.debug({ err: (err as Error).message, teamId }, 'post-publish sync failed')
          })
        }
      }, 300) }
      entry.timer.unref()
      pending = entry
      pendingSyncs.set(teamId, pending)
    }
    for (const peer of peers) pending.peers.set(peer.toString(), peer)
  }

  // a member just admitted (or re-admitted) who is connected: catch them up now rather than at
  // the next periodic round
  const onMembershipChange = (shard: Shard): void => {
    if (!running) return
    if (shard.authorKey === ownKey) return
    for (const connection of mesh.libp2p.getConnections()) {
      if (keyOfPeer(connection.remotePeer) === shard.authorKey || isMember(shard.teamId, connection.remotePeer)) {
        void sync.syncWith(connection.remotePeer, shard.teamId, { signal: AbortSignal.timeout(60_000) }).catch((err) => {
          logger.debug({ err: (err as Error).message, teamId: shard.teamId }, 'catch-up sync failed')
        })
        if (keyOfPeer(connection.remotePeer) === shard.authorKey) break
      }
    }
  }

  // hand our recent membership ops (a fresh join above all) to every member we connect to, so a
  // join is never stranded on our disk (gossip misses peers whose subscription we have not seen,
  // and sync serves members only)
  const pushMembership = (peer: PeerId): void => {
    for (const [teamId, shard] of recentOwnMembership) {
      if (now() - shard.hlc.wallMs > 24 * 3600_000) { recentOwnMembership.delete(teamId); continue }
      // only to members as we know them: membership ops name the team and its keys
      if (!isMember(teamId, peer)) continue
      void sendJoin(mesh.libp2p, peer, shard.bytes, AbortSignal.timeout(20_000)).catch((err) => {
        logger.debug({ peer: peer.toString(), err: (err as Error).message }, 'could not hand over membership op')
      })
    }
  }
  const onPeerConnect = (event: CustomEvent<PeerId>): void => { pushMembership(event.detail) }

  const unsubscribe = (teamId: string): void => {
    const topic = teamTopic(teamId)
    mesh.libp2p.services.pubsub.unsubscribe(topic)
    mesh.libp2p.services.pubsub.topicValidators.delete(topic)
    sync.removeTeam(teamId)
  }

  const gossip = async (shard: Shard): Promise<void> => {
    try {
      await mesh.libp2p.services.pubsub.publish(teamTopic(shard.teamId), shard.bytes)
    } catch (err) {
      // no subscribed peers right now: anti-entropy sync delivers it later
      logger.debug({ err: (err as Error).message, shard: shard.id }, 'gossip publish failed')
    }
  }

  const isMember = (teamId: string, peer: PeerId): boolean => {
    const key = keyOfPeer(peer)
    return key != null && membership(teamId)?.isActiveMember(key) === true
  }

  const teamOnlyTeams = (): string[] => store.teams().filter((t) => t.teamOnly).map((t) => t.teamId)
  const admissionOpen = (): boolean => {
    const t = now()
    for (const [key, expiry] of outstandingInvites) if (expiry < t) outstandingInvites.delete(key)
    return outstandingInvites.size > 0
  }
  const updateGater = (): void => {
    const teamOnly = teamOnlyTeams()
    if (teamOnly.length === 0) {
      mesh.gater.removeRule('team-only')
      return
    }
    mesh.gater.setRule('team-only', (peer) => teamOnly.some((teamId) => isMember(teamId, peer)) || admissionOpen())
  }
  // a non-member admitted during an invite window must become a member soon, or is disconnected
  const closeUnadmitted = (): void => {
    const teamOnly = teamOnlyTeams()
    if (teamOnly.length === 0) return
    const grace = options.admissionGraceMs ?? 60_000
    for (const connection of mesh.libp2p.getConnections()) {
      if (teamOnly.some((teamId) => isMember(teamId, connection.remotePeer))) continue
      if (now() - connection.timeline.open > grace) void connection.close().catch(() => {})
    }
  }

  const requireTeam = (teamId: string): MembershipView => {
    const view = membership(teamId)
    if (view == null) throw new UnknownTeamError(teamId)
    return view
  }

  const publish = async (teamId: string, kind: ShardKind, body: Uint8Array, visibility: ShardVisibility, supersedes: string[] = []): Promise<Shard> => {
    requireTeam(teamId)
    const shard = createShard(identity, { teamId, kind, body, visibility, supersedes, hlc: clock.now() })
    // signed here a moment ago: every other check still runs, the signature check need not
    const result = acceptShards([shard.bytes], 'local', teamId, [true])
    if (result.rejected.length > 0) throw new ShardRejectedError(result.rejected[0].code, result.rejected[0].message)
    await gossip(shard)
    // gossip reaches only peers whose subscription we already know; connected members it could
    // not reach get a reconciliation shortly after instead
    const subscribers = new Set(mesh.libp2p.services.pubsub.getSubscribers(teamTopic(teamId)).map((p) => p.toString()))
    const unreached = mesh.libp2p.getPeers().filter((p) => !subscribers.has(p.toString()) && isMember(teamId, p))
    if (unreached.length > 0) scheduleSync(teamId, unreached)
    return shard
  }

  const membershipOp = async (teamId: string, op: MembershipOp): Promise<Shard> => {
    const shard = await publish(teamId, 'membership', encodeMembershipOp(op), 'team')
    recentOwnMembership.set(teamId, shard)
    for (const peer of mesh.libp2p.getPeers()) pushMembership(peer)
    return shard
  }

  const heads = (teamId: string): string[] => {
    const shards = store.membershipShards(teamId)
    return shards.length > 0 ? [shards[shards.length - 1].id] : []
  }

  return {
    store,
    clock,
    events,
    membership,
    isMember,
    acceptShards,
    acceptShardsParallel,
    trustOf: (brainId) => options.trust?.[brainId] ?? 1,
    shardOfRecord: (recordId) => store.shardOfRecord(recordId),
    syncWith: async (peer, teamId, syncOptions) => await sync.syncWith(peer, teamId, syncOptions),
    setMemoryPort: (port) => { memories = port },
    setSkillPort: (port) => { skills = port },
    shardsOfKind: (teamId, kind) => (shardsOfKindStatement.all(teamId, kind) as Uint8Array[]).map((b) => decodeShard(new Uint8Array(b), { verify: false })),
    fetchSkillBundles: async (peer, teamId, ids, fetchOptions = {}) => await sync.fetch(peer, teamId, ids, { ...fetchOptions, type: RESOURCE_SKILL_BUNDLE }),
    async start () {
      if (running) return
      running = true
      await sync.start()
      mesh.libp2p.addEventListener('peer:connect', onPeerConnect)
      await serveJoins(mesh.libp2p, logger, (bytes, peer) => {
        const result = acceptShards([bytes], peer.toString())
        return { accepted: result.accepted.length > 0, duplicate: result.duplicates > 0, error: result.rejected[0] }
      })
      for (const team of store.teams()) subscribe(team.teamId)
      updateGater()
      admissionTimer = setInterval(closeUnadmitted, 10_000)
      admissionTimer.unref()
    },
    async stop () {
      if (!running) return
      running = false
      if (admissionTimer != null) clearInterval(admissionTimer)
      for (const { timer } of cascades.values()) clearTimeout(timer)
      cascades.clear()
      for (const { timer } of pendingSyncs.values()) clearTimeout(timer)
      pendingSyncs.clear()
      mesh.libp2p.removeEventListener('peer:connect', onPeerConnect)
      await mesh.libp2p.unhandle(JOIN_PROTOCOL)
      for (const team of store.teams()) {
        try { unsubscribe(team.teamId) } catch {}
      }
      await sync.stop()
      await verifyPool?.close()
      verifyPool = undefined
      mesh.gater.removeRule('team-only')
    },
    async createTeam (name, createOptions = {}) {
      const trimmed = name.trim()
      if (trimmed.length === 0 || trimmed.length > 128) throw new TeamError('ERR_INVALID_INPUT', 'a team name is 1 to 128 characters')
      const nonce = randomBytes(32).toString('hex')
      const teamId = deriveTeamId(ownKey, trimmed, nonce)
      store.putTeam({ teamId, name: trimmed, joinedAt: now(), teamOnly: createOptions.teamOnly === true, bootstrap: [] })
      membershipCache.delete(teamId)
      const genesis = createShard(identity, { teamId, kind: 'membership', body: encodeMembershipOp({ op: 'create', name: trimmed, nonce, parents: [] }), visibility: 'team', hlc: clock.now() })
      commit([{ shard: genesis }], 'local')
      if (running) subscribe(teamId)
      updateGater()
      logger.info({ teamId, name: trimmed }, 'team created')
      return { teamId, name: trimmed }
    },
    async createInvite (teamId, inviteOptions = {}) {
      const view = requireTeam(teamId)
      if (!view.isAdmin(ownKey)) throw new TeamError('ERR_NOT_ADMIN', `only an admin of team ${teamId} can invite; ask one of: ${[...view.members.values()].filter((m) => m.active && m.role === 'admin').map((m) => m.brainId).join(', ')}`)
      const expiresAt = now() + (inviteOptions.expiresInMs ?? DEFAULT_INVITE_MS)
      const { token, capability } = await issueInvite(identity, {
        teamId,
        name: view.name,
        role: inviteOptions.role ?? 'member',
        expiresAt,
        bootstrap: inviteOptions.bootstrap ?? mesh.addresses(),
        membership: store.membershipShards(teamId).map((s) => s.bytes)
      })
      outstandingInvites.set(capability.invite_key, expiresAt)
      updateGater()
      return { token, expiresAt: new Date(expiresAt).toISOString() }
    },
    async join (tokenText) {
      const token = parseInviteToken(tokenText)
      if (token.capability.expires_at < now()) throw new InviteError('ERR_INVITE_EXPIRED', `the invite expired at ${new Date(token.capability.expires_at).toISOString()}; ask for a new one`)
      const existing = store.team(token.teamId)
      if (existing != null && membership(token.teamId)?.isActiveMember(ownKey) === true) {
        return { teamId: token.teamId, name: existing.name }
      }
      // check the invite before anything is stored: its membership log must prove the issuer an admin
      const logShards: Shard[] = []
      for (const encoded of token.membership) {
        try {
          logShards.push(decodeShard(new Uint8Array(Buffer.from(encoded, 'base64'))))
        } catch (err) {
          throw new InviteError('ERR_INVITE_INVALID', `the invite's membership log is damaged: ${(err as Error).message}`)
        }
      }
      const view = computeMembership(token.teamId, logShards)
      if (view.genesisId === '') throw new InviteError('ERR_INVITE_INVALID', 'the invite does not carry the team genesis')
      if (!view.isAdmin(token.capability.issuer)) throw new InviteError('ERR_INVITE_INVALID', 'the invite was issued by someone who is not an admin of the team')
      store.putTeam({ teamId: token.teamId, name: view.name, joinedAt: now(), teamOnly: existing?.teamOnly ?? false, bootstrap: token.bootstrap })
      membershipCache.delete(token.teamId)
      const logResult = acceptShards(logShards.map((s) => s.bytes), 'invite', token.teamId)
      if (logResult.rejected.length > 0) throw new InviteError('ERR_INVITE_INVALID', `the invite's membership log was refused: ${logResult.rejected[0].message}`)
      const op = await buildJoinOp(token, identity, heads(token.teamId))
      if (running) subscribe(token.teamId)
      await membershipOp(token.teamId, op)
      if (membership(token.teamId)?.isActiveMember(ownKey) !== true) throw new InviteError('ERR_INVITE_INVALID', 'the join did not take effect (the invite may be used up or revoked)')
      updateGater()
      for (const address of token.bootstrap) {
        void mesh.connect(address, { signal: AbortSignal.timeout(15_000) }).catch((err) => { logger.debug({ address, err: (err as Error).message }, 'cannot reach invite bootstrap peer') })
      }
      logger.info({ teamId: token.teamId, name: view.name }, 'joined team')
      return { teamId: token.teamId, name: view.name }
    },
    teams: () => store.teams().map((t) => ({ ...t, members: [...(membership(t.teamId)?.members.values() ?? [])].filter((m) => m.active).length })),
    members (teamId) {
      const view = requireTeam(teamId)
      return [...view.members.values()].map((m) => ({
        brainId: m.brainId,
        publicKey: m.publicKey,
        role: m.role,
        active: m.active,
        since: new Date(m.intervals[m.intervals.length - 1].from.wallMs).toISOString()
      }))
    },
    async removeMember (teamId, member) {
      const view = requireTeam(teamId)
      const target = [...view.members.values()].find((m) => m.brainId === member || m.publicKey === member)
      if (target == null || !target.active) throw new TeamError('ERR_NOT_A_MEMBER', `${member} is not a member of team ${teamId}`)
      if (!view.isAdmin(ownKey) && target.publicKey !== ownKey) throw new TeamError('ERR_NOT_ADMIN', 'only an admin can remove another member')
      await membershipOp(teamId, { op: 'remove', member: target.publicKey, parents: heads(teamId) })
      updateGater()
    },
    setTeamOnly (teamId, teamOnly) {
      requireTeam(teamId)
      store.setTeamOnly(teamId, teamOnly)
      updateGater()
    },
    publish,
    async dispute (teamId, shardId, reason) {
      if (!/^[0-9a-f]{64}$/.test(shardId)) throw new TeamError('ERR_INVALID_INPUT', 'a shard id is 64 hex characters')
      return await publish(teamId, 'dispute', encodeCanonicalJson({ target: shardId, reason }), 'team')
    },
    provenance (shardId) {
      const shard = store.get(shardId)
      if (shard == null) return undefined
      return {
        shardId,
        teamId: shard.teamId,
        author: shard.author,
        time: new Date(shard.hlc.wallMs).toISOString(),
        supersededBy: store.supersededBy(shardId),
        disputes: store.disputesOf(shardId).map((d) => ({ ...d, at: new Date(d.at).toISOString() }))
      }
    }
  }
}
