import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Identity } from '../identity/index.ts'
import { validateSampling, type LocalModel, type SamplingOptions } from '../inference/index.ts'
import { RequestError } from '../mesh/index.ts'
import {
  SessionTable, createMigrationService, sessionPositions, validateSessionId, type DrainResult, type HostedSession, type MigrationResult, type MigrationService,
  type MigrationServiceOptions, type UsxfQuantization
} from '../usxf/index.ts'
import { InvalidInputError, PermagentError, errorMessage, silentLogger, type Logger } from '../util/index.ts'
import { PeerNotConnectedError, SessionBusyError, SessionLimitError, SessionNotFoundError, SessionRefusedError } from './errors.ts'
import { createStoredModels, type StoredModels } from './stored-models.ts'

export interface SessionHostLimits {
  /** Sessions hosted at once, created here or migrated in (default 16). */
  maxSessions: number
  /** Tokens one create or generate call may produce (default 4096). */
  maxTokensPerCall: number
  /** A session nobody used for this long is closed (default 30 min). */
  idleMs: number
}

export const DEFAULT_SESSION_HOST_LIMITS: SessionHostLimits = { maxSessions: 16, maxTokensPerCall: 4096, idleMs: 30 * 60_000 }

/** Migration service settings a node may tune; the session host owns the rest (models, table, policy). */
export type SessionMigrationSettings = Pick<MigrationServiceOptions,
'readTimeoutMs' | 'attachTimeoutMs' | 'maxMigrationMs' | 'maxStateBytes' | 'maxInbound' | 'maxFidelityTokens' | 'onInbound'>

export interface SessionHostOptions {
  libp2p: Libp2p
  identity: Identity
  /** The node's data dir: models are opened from its store. */
  dataDir: string
  logger?: Logger
  limits?: Partial<SessionHostLimits>
  /**
   * Peers whose sessions may migrate in. Default: every peer, since only peers the connection
   * gater admitted can open a stream; a node passes its gater's current verdict to re-check it.
   */
  acceptFrom?: (peer: PeerId) => boolean
  /** Serve inbound migrations (default true). Off, the node only sends sessions out. */
  acceptMigrations?: boolean
  /** onnxruntime threads per opened model. */
  threads?: number
  /** Longest context of opened models (default min(model limit, 4096), as `permagent run`). */
  maxContext?: number
  migration?: SessionMigrationSettings
}

export interface CreateSessionRequest {
  /** A stored model's name. */
  model: string
  prompt?: string
  promptIds?: readonly number[]
  /** Tokens to generate now (at least 1: the last one is held as the session's next input). */
  maxTokens: number
  sampling?: SamplingOptions
  /** Token ids that end a generation call (default: the model's eos ids). */
  stopTokens?: readonly number[]
  /** The session's id (default: a random one). */
  id?: string
  signal?: AbortSignal
}

export interface GenerateSessionRequest {
  maxTokens: number
  /** Text or token ids to feed after the pending token (a new turn); usually nothing. */
  prompt?: string
  promptIds?: readonly number[]
  /** Replaces the session's sampling settings from this call on. */
  sampling?: SamplingOptions
  signal?: AbortSignal
}

export interface SessionView {
  id: string
  model: string
  /** created: started on this node; migrated: arrived by migration. */
  origin: 'created' | 'migrated'
  state: 'live' | 'generating' | 'migrating'
  /** Positions in the KV cache. */
  positions: number
  maxContext: number
  /** The last sampled token, fed at the start of the next generate call. */
  pendingToken: number | null
  /** Prompt tokens of the create call (0 for a migrated session). */
  promptTokens: number
  /** Every token generated on this node, in order (the pending token last). */
  output: number[]
  text: string
  finishReason: 'stop' | 'length' | 'context' | null
  sampling: SamplingOptions
  createdAt: string
  lastUsedAt: string
}

export interface GenerationStep {
  session: SessionView
  /** Tokens of this call. */
  tokens: number[]
  text: string
  finishReason: 'stop' | 'length' | 'context'
  prefillMs: number
  decodeMs: number
}

export interface HostMigrateOptions {
  /** Wire quantizations in order of preference (default none, i.e. exact f32). */
  quantization?: UsxfQuantization | UsxfQuantization[]
  /** Greedy tokens both sides compare before the commit (default 16). */
  fidelityTokens?: number
  /** Commit although a lossy transfer changed the continuation (default: only for int8-block). */
  force?: boolean
  /**
   * Let the warm-start estimate decide (outcome 'declined' when a re-prefill looks faster). Off by
   * default: the host has no re-prefill path, so an explicit migrate always transfers the state.
   */
  auto?: boolean
  signal?: AbortSignal
}

/**
 * Generation sessions hosted by the node: created from a prompt, continued token by token,
 * migrated to peers with the USXF migration service (which also takes sessions in), and drained.
 */
export interface SessionHost {
  readonly migration: MigrationService
  readonly limits: SessionHostLimits
  /** False once the node is draining: no new sessions, none migrate in. */
  readonly accepting: boolean
  start: () => Promise<void>
  stop: () => Promise<void>
  create: (request: CreateSessionRequest) => Promise<GenerationStep>
  generate: (id: string, request: GenerateSessionRequest) => Promise<GenerationStep>
  list: () => SessionView[]
  get: (id: string) => SessionView
  close: (id: string) => void
  migrate: (id: string, to: string | PeerId, options?: HostMigrateOptions) => Promise<MigrationResult>
  /** Stops taking sessions, lets running generations finish, and migrates every session to `to`. */
  drain: (to: string | PeerId, options?: Omit<HostMigrateOptions, 'auto'>) => Promise<DrainResult>
}

/** What the host keeps beside the migration table's entry; made on first sight for migrated sessions. */
interface SessionRecord {
  origin: SessionView['origin']
  sampling: SamplingOptions
  stopTokens: readonly number[] | undefined
  promptTokens: number
  output: number[]
  finishReason: SessionView['finishReason']
  lastUsedAt: number
  running: Promise<unknown> | null
}

export function createSessionHost (options: SessionHostOptions): SessionHost {
  const logger = (options.logger ?? silentLogger()).child({ module: 'sessions' })
  const limits = validateLimits({ ...DEFAULT_SESSION_HOST_LIMITS, ...options.limits })
  const models: StoredModels = createStoredModels({ dataDir: options.dataDir, logger, threads: options.threads, maxContext: options.maxContext })
  const table = new SessionTable({ capacity: limits.maxSessions })
  const records = new WeakMap<HostedSession, SessionRecord>()
  // ids of sessions being created (prefill running), so two creates cannot race for one id
  const creating = new Set<string>()
  let draining = false
  let running = false
  let sweeper: NodeJS.Timeout | null = null

  const migration = createMigrationService({
    ...options.migration,
    libp2p: options.libp2p,
    identity: options.identity,
    models: { find: async (identity) => await models.byIdentity(identity) },
    sessions: table,
    logger,
    acceptFrom: options.acceptFrom,
    serveInbound: options.acceptMigrations !== false,
    onInbound: (event) => {
      logger.info({ peer: event.peer, sessionId: event.sessionId, outcome: event.outcome, code: event.code }, 'inbound session migration ended')
      options.migration?.onInbound?.(event)
    }
  })

  const recordOf = (hosted: HostedSession): SessionRecord => {
    let record = records.get(hosted)
    if (record === undefined) {
      record = { origin: 'migrated', sampling: { temperature: 0 }, stopTokens: undefined, promptTokens: 0, output: [], finishReason: null, lastUsedAt: hosted.createdAt, running: null }
      records.set(hosted, record)
    }
    return record
  }

  const hostedOf = (id: string): HostedSession => {
    const hosted = table.get(id)
    if (hosted === undefined) throw new SessionNotFoundError(id)
    return hosted
  }

  const view = (hosted: HostedSession): SessionView => {
    const record = recordOf(hosted)
    return {
      id: hosted.id,
      model: hosted.model.manifest.name,
      origin: record.origin,
      state: record.running !== null ? 'generating' : hosted.state === 'busy' ? 'migrating' : 'live',
      positions: sessionPositions(hosted.session),
      maxContext: hosted.model.maxContext,
      pendingToken: hosted.pendingToken,
      promptTokens: record.promptTokens,
      output: [...record.output],
      text: decode(hosted.model, record.output),
      finishReason: record.finishReason,
      sampling: record.sampling,
      createdAt: new Date(hosted.createdAt).toISOString(),
      lastUsedAt: new Date(record.lastUsedAt).toISOString()
    }
  }

  const requireRunning = (): void => {
    if (!running) throw new PermagentError('ERR_UNAVAILABLE', 'the session host is not running')
  }

  const checkMaxTokens = (maxTokens: number): void => {
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > limits.maxTokensPerCall) {
      throw new InvalidInputError(`maxTokens must be a whole number in 1..${limits.maxTokensPerCall}`)
    }
  }

  const parsePeer = (to: string | PeerId, check: { connected: boolean } = { connected: true }): PeerId => {
    let peer: PeerId
    if (typeof to === 'string') {
      try {
        peer = peerIdFromString(to)
      } catch {
        throw new InvalidInputError(`"${to.slice(0, 80)}" is not a peer id (see permagent peers)`)
      }
    } else {
      peer = to
    }
    if (peer.equals(options.libp2p.peerId)) throw new InvalidInputError('the target is this node itself')
    if (check.connected && options.libp2p.getConnections(peer).length === 0) throw new PeerNotConnectedError(peer.toString())
    return peer
  }

  /** Remote refusals keep their code; the message says who refused and that nothing moved. */
  const explainRefusal = (err: unknown, id: string, peer: PeerId): unknown => {
    if (!(err instanceof RequestError) || !err.remote) return err
    const reason = err.message.replace(/^.*?peer replied: /, '')
    return new PermagentError(err.code, `peer ${peer.toString()} refused session ${id}: ${reason} (the session stays on this node)`, { cause: err })
  }

  const sweep = (): void => {
    const now = Date.now()
    for (const hosted of table.list()) {
      const record = recordOf(hosted)
      if (hosted.state !== 'live' || record.running !== null || now - record.lastUsedAt < limits.idleMs) continue
      table.remove(hosted.id)
      logger.info({ sessionId: hosted.id, idleMs: now - record.lastUsedAt }, 'idle session closed')
    }
  }

  return {
    migration,
    limits,
    get accepting () { return table.open },
    async start () {
      if (running) return
      await migration.start()
      running = true
      sweeper = setInterval(sweep, Math.max(1000, Math.min(limits.idleMs / 4, 60_000)))
      sweeper.unref()
    },
    async stop () {
      if (!running) return
      running = false
      if (sweeper !== null) clearInterval(sweeper)
      sweeper = null
      await migration.stop()
      for (const hosted of table.list()) {
        // a running generation fails on its next step once its caches are gone
        table.remove(hosted.id)
      }
      await models.close()
    },

    async create (request) {
      requireRunning()
      checkMaxTokens(request.maxTokens)
      const sampling = { ...(request.sampling ?? {}) }
      validateSampling({ ...sampling, seed: sampling.seed ?? 0 })
      const id = request.id ?? `s-${randomBytes(6).toString('hex')}`
      try {
        validateSessionId(id)
      } catch (err) {
        throw new InvalidInputError(errorMessage(err))
      }
      if (!table.open) throw new SessionRefusedError('this node is draining and takes no new sessions')
      if (table.has(id) || creating.has(id)) throw new SessionBusyError(`session ${id} already exists`)
      if (table.size + creating.size >= limits.maxSessions) throw new SessionLimitError(limits.maxSessions)
      creating.add(id)
      try {
        const model = await models.byName(request.model)
        const session = model.newSession()
        try {
          const result = await model.generate({
            ...(request.promptIds !== undefined ? { promptIds: request.promptIds } : {}),
            ...(request.prompt !== undefined ? { prompt: request.prompt } : {}),
            maxTokens: request.maxTokens,
            sampling: seeded(sampling, 0),
            stopTokens: request.stopTokens,
            signal: request.signal
          }, session)
          if (!table.open) throw new SessionRefusedError('this node started draining during the prefill and takes no new sessions')
          // the token ids travel with a migration: the target needs the pending token to continue,
          // and the token history for the repetition penalty
          const hosted = table.add(id, model, session, { pendingToken: result.tokens[result.tokens.length - 1], shareTokenIds: true })
          const record: SessionRecord = {
            origin: 'created',
            sampling,
            stopTokens: request.stopTokens,
            promptTokens: result.promptTokens.length,
            output: [...result.tokens],
            finishReason: result.finishReason,
            lastUsedAt: Date.now(),
            running: null
          }
          records.set(hosted, record)
          logger.info({ sessionId: id, model: request.model, positions: sessionPositions(session) }, 'session created')
          return { session: view(hosted), tokens: result.tokens, text: result.text, finishReason: result.finishReason, prefillMs: result.prefillMs, decodeMs: result.decodeMs }
        } catch (err) {
          session.reset()
          throw err
        }
      } finally {
        creating.delete(id)
      }
    },

    async generate (id, request) {
      requireRunning()
      checkMaxTokens(request.maxTokens)
      const hosted = hostedOf(id)
      const record = recordOf(hosted)
      if (hosted.state !== 'live') throw new SessionBusyError(`session ${id} is being migrated`)
      if (record.running !== null) throw new SessionBusyError(`session ${id} is generating; it runs one generation at a time`)
      if (draining) throw new SessionBusyError(`this node is draining; session ${id} is moving to another node`)
      const sampling = request.sampling !== undefined ? { ...request.sampling } : record.sampling
      validateSampling({ ...sampling, seed: sampling.seed ?? 0 })
      const { model, session } = hosted
      const fresh = continuationInput(model, request)
      const input = [...(hosted.pendingToken !== null ? [hosted.pendingToken] : []), ...fresh]
      if (input.length === 0) throw new InvalidInputError(`session ${id} holds no pending token (it arrived without one); give prompt or promptIds`)
      const base = sessionPositions(session)
      const history = session.tokens.length
      const run = model.generate({ promptIds: input, maxTokens: request.maxTokens, sampling: seeded(sampling, base), stopTokens: record.stopTokens, signal: request.signal }, session)
      record.running = run
      try {
        const result = await run
        hosted.pendingToken = result.tokens[result.tokens.length - 1]
        record.sampling = sampling
        record.output.push(...result.tokens)
        record.finishReason = result.finishReason
        return { session: view(hosted), tokens: result.tokens, text: result.text, finishReason: result.finishReason, prefillMs: result.prefillMs, decodeMs: result.decodeMs }
      } catch (err) {
        // roll back to where the call started, so the session and its pending token stay consistent
        if (table.get(id) === hosted) {
          for (const cache of session.caches) if (cache.length > base) cache.truncate(base)
          session.tokens.length = history
        }
        throw err
      } finally {
        record.running = null
        record.lastUsedAt = Date.now()
      }
    },

    list: () => table.list().map(view),
    get: (id) => view(hostedOf(id)),

    close (id) {
      const hosted = hostedOf(id)
      if (recordOf(hosted).running !== null) throw new SessionBusyError(`session ${id} is generating; close it when the call returns`)
      if (hosted.state !== 'live') throw new SessionBusyError(`session ${id} is being migrated`)
      table.remove(id)
      logger.info({ sessionId: id }, 'session closed')
    },

    async migrate (id, to, migrateOptions = {}) {
      requireRunning()
      const hosted = hostedOf(id)
      if (recordOf(hosted).running !== null) throw new SessionBusyError(`session ${id} is generating; migrate it when the call returns`)
      const peer = parsePeer(to)
      try {
        const result = await migration.migrate(id, peer, {
          quantization: migrateOptions.quantization,
          fidelityTokens: migrateOptions.fidelityTokens,
          acceptDivergence: migrateOptions.force === true ? true : undefined,
          mode: migrateOptions.auto === true ? 'auto' : 'always',
          signal: migrateOptions.signal
        })
        if (result.outcome === 'declined') recordOf(hosted).lastUsedAt = Date.now()
        return result
      } catch (err) {
        throw explainRefusal(err, id, peer)
      }
    },

    async drain (to, drainOptions = {}) {
      requireRunning()
      // a node with no sessions drains trivially: it only stops taking new ones
      const peer = parsePeer(to, { connected: table.size > 0 })
      table.setAccepting(false)
      if (table.size === 0) return { migrated: [], failed: [] }
      draining = true
      try {
        // running generations finish first; new ones are refused until the drain is over
        await Promise.allSettled(table.list().map(async (hosted) => await recordOf(hosted).running))
        const result = await migration.drain(peer, {
          quantization: drainOptions.quantization,
          fidelityTokens: drainOptions.fidelityTokens,
          acceptDivergence: drainOptions.force === true ? true : undefined,
          signal: drainOptions.signal
        })
        logger.info({ peer: peer.toString(), migrated: result.migrated.length, failed: result.failed.length }, 'hosted sessions drained')
        return result
      } catch (err) {
        logger.warn({ err: errorMessage(err) }, 'drain failed')
        throw err
      } finally {
        draining = false
      }
    }
  }
}

function validateLimits (limits: SessionHostLimits): SessionHostLimits {
  const whole = (name: keyof SessionHostLimits, min: number, max: number): void => {
    const value = limits[name]
    if (!Number.isInteger(value) || value < min || value > max) throw new InvalidInputError(`session limit ${name} must be a whole number in ${min}..${max}`)
  }
  whole('maxSessions', 1, 100_000)
  whole('maxTokensPerCall', 1, 1 << 20)
  whole('idleMs', 1000, 30 * 24 * 3600_000)
  return limits
}

/**
 * Each call samples with its own generator; a fixed seed is offset by the session's position so
 * successive calls do not replay one random stream (position 0 keeps the seed: the first call
 * samples exactly like `permagent run --seed`).
 */
function seeded (sampling: SamplingOptions, position: number): SamplingOptions {
  return sampling.seed === undefined ? sampling : { ...sampling, seed: (sampling.seed + position) % 2 ** 32 }
}

/** Tokens a call feeds after the pending one: ids as given, text without the BOS a new prompt gets. */
function continuationInput (model: LocalModel, request: Pick<GenerateSessionRequest, 'prompt' | 'promptIds'>): number[] {
  if (request.prompt !== undefined && request.promptIds !== undefined) throw new InvalidInputError('give prompt or promptIds, not both')
  if (request.promptIds !== undefined) return model.encodePrompt({ promptIds: request.promptIds })
  if (request.prompt === undefined || request.prompt === '') return []
  if (model.tokenizer === null) throw new InvalidInputError(`model ${model.manifest.name} has no tokenizer; pass token ids`)
  return model.tokenizer.encode(request.prompt, { addSpecialTokens: false })
}

function decode (model: LocalModel, tokens: readonly number[]): string {
  if (model.tokenizer === null || tokens.length === 0) return ''
  return model.tokenizer.decode([...tokens])
}
