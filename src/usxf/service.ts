import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Identity } from '../identity/index.ts'
import type { LocalModel } from '../inference/index.ts'
import { errorMessage, silentLogger, type Logger } from '../util/index.ts'
import type { KvCacheSnapshot } from '../inference/index.ts'
import { MessageChannel } from '../mesh/index.ts'
import { UsxfDecoder, splitRecords } from './decoder.ts'
import { UsxfEncoder, type EncodeOptions } from './encoder.ts'
import { UsxfModelMismatchError, UsxfSessionBusyError, UsxfShapeMismatchError } from './errors.ts'
import type { UsxfHeaderInfo } from './format.ts'
import { allocateKv, attachKv, checkStateFits, extractKv, kvStateInput } from './kv.ts'
import { SessionTable, sessionPositions, validateSessionId, type HostedSession, type ModelCatalog } from './sessions.ts'
import { migrateSession, type MigrateOptions, type MigrationResult } from './source.ts'
import { serveMigration, type InboundEvent } from './target.ts'
import { MAX_MESSAGE_BYTES, MigrationWire, USXF_PROTOCOL } from './wire.ts'

export interface MigrationServiceOptions {
  libp2p: Libp2p
  identity: Identity
  /** The models this node has open, found by the identity a state names. */
  models: ModelCatalog
  /** The node's hosted sessions (default: a new table). */
  sessions?: SessionTable
  logger?: Logger
  /**
   * Whether start() serves /permagent/usxf/1.0.0 (default true). Without it the service only sends
   * sessions out; a node has one inbound handler, so a second service on it must not serve.
   */
  serveInbound?: boolean
  /** Peers allowed to migrate sessions in (default: any peer the connection gater admits). */
  acceptFrom?: (peer: PeerId) => boolean
  /** Largest inbound state at f32 (default 8 GiB). */
  maxStateBytes?: number
  /** Inbound migrations at once (default 2). */
  maxInbound?: number
  /** Deadline for every read from the peer (default 30 s). */
  readTimeoutMs?: number
  /** How long a source waits for the target's attach report (default 10 min: it runs the fidelity check). */
  attachTimeoutMs?: number
  /** Deadline for a whole inbound migration (default 30 min). */
  maxMigrationMs?: number
  /** Greedy tokens a target generates for a fidelity check at most (default 256). */
  maxFidelityTokens?: number
  /** A host that knows its prefill rate says so; otherwise it is measured once per model. */
  prefillTokensPerSecond?: (model: LocalModel) => number | undefined
  /** Tokens of the prefill calibration run (default 64). */
  calibrationTokens?: number
  /** Codec speed assumed by the warm-start estimate (default 1e9 bytes/s). */
  codecBytesPerSecond?: number
  /** Told how every inbound migration ended (committed, aborted, withdrawn, refused with a code). */
  onInbound?: (event: InboundEvent) => void
}

export interface DrainResult {
  migrated: MigrationResult[]
  failed: Array<{ sessionId: string, code: string, message: string }>
}

export interface CheckpointOptions extends Pick<EncodeOptions, 'quantization' | 'blockTokens' | 'chunkBytes' | 'quantGroup'> {
  /** Only positions from here on: an incremental checkpoint that `restore` appends (default 0). */
  fromPosition?: number
}

export interface Checkpoint {
  header: UsxfHeaderInfo
  /** Signed USXF records; the state is fixed when checkpoint() returns, whatever the session does next. */
  records: () => AsyncGenerator<Uint8Array>
}

export interface RestoreOptions {
  sessionId: string
  /** Accept only checkpoints signed by this key (e.g. the node that made them). */
  producer?: Uint8Array
  signal?: AbortSignal
}

export interface MigrationService {
  readonly sessions: SessionTable
  readonly protocol: string
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Moves a session to a peer (warm-start decision, signed transfer, attach, fidelity check, two-phase commit). */
  migrate: (sessionId: string, peer: PeerId, options?: MigrateOptions) => Promise<MigrationResult>
  /** Stops taking sessions and hands every live one to `peer` by migration (no replay). */
  drain: (peer: PeerId, options?: Omit<MigrateOptions, 'mode'>) => Promise<DrainResult>
  /** A signed USXF snapshot of a session's cache, for failover. */
  checkpoint: (sessionId: string, options?: CheckpointOptions) => Checkpoint
  /** Verifies a checkpoint and attaches it: a new session, or appended to the one it continues. */
  restore: (source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: RestoreOptions) => Promise<HostedSession>
  /** This node's prefill rate for a model, tokens/s (measured once, then cached). */
  prefillRate: (model: LocalModel) => Promise<number>
}

export function createMigrationService (options: MigrationServiceOptions): MigrationService {
  const logger = (options.logger ?? silentLogger()).child({ module: 'usxf' })
  const sessions = options.sessions ?? new SessionTable()
  const readTimeoutMs = options.readTimeoutMs ?? 30_000
  const maxStateBytes = options.maxStateBytes ?? 8 * 1024 ** 3
  const rates = new Map<string, Promise<number>>()
  const reserved = new Set<string>()
  const inbound = new Set<AbortController>()
  let started = false

  const prefillRate = async (model: LocalModel): Promise<number> => {
    const known = options.prefillTokensPerSecond?.(model)
    if (known !== undefined) return known
    const key = model.manifest.weightsSha256
    let rate = rates.get(key)
    if (rate === undefined) {
      rate = measurePrefillRate(model, options.calibrationTokens ?? 64)
      rates.set(key, rate)
      rate.catch(() => rates.delete(key))
    }
    return await rate
  }

  const targetContext = {
    models: options.models,
    sessions,
    reserved,
    logger,
    acceptFrom: options.acceptFrom ?? (() => true),
    maxStateBytes,
    readTimeoutMs,
    maxMigrationMs: options.maxMigrationMs ?? 30 * 60_000,
    maxFidelityTokens: options.maxFidelityTokens ?? 256,
    prefillRate,
    onInbound: options.onInbound
  }
  const sourceContext = {
    libp2p: options.libp2p,
    identity: options.identity,
    sessions,
    logger,
    readTimeoutMs,
    attachTimeoutMs: options.attachTimeoutMs ?? 600_000,
    codecBytesPerSecond: options.codecBytesPerSecond ?? 1e9
  }

  const service: MigrationService = {
    sessions,
    protocol: USXF_PROTOCOL,
    async start () {
      if (started) return
      if (options.serveInbound === false) { started = true; return }
      await options.libp2p.handle(USXF_PROTOCOL, async (stream, connection) => {
        const controller = new AbortController()
        inbound.add(controller)
        try {
          const wire = new MigrationWire(new MessageChannel(USXF_PROTOCOL, stream, connection.remotePeer, MAX_MESSAGE_BYTES))
          await serveMigration(wire, connection.remotePeer, targetContext, controller.signal)
        } finally {
          inbound.delete(controller)
        }
      }, { maxInboundStreams: options.maxInbound ?? 2 })
      started = true
    },
    async stop () {
      if (!started) return
      started = false
      if (options.serveInbound === false) return
      await options.libp2p.unhandle(USXF_PROTOCOL)
      for (const controller of inbound) controller.abort(new Error('the migration service stopped'))
    },
    migrate: async (sessionId, peer, migrateOptions = {}) => await migrateSession(sourceContext, sessionId, peer, migrateOptions),
    async drain (peer, drainOptions = {}) {
      sessions.setAccepting(false)
      const result: DrainResult = { migrated: [], failed: [] }
      for (const hosted of sessions.list()) {
        try {
          result.migrated.push(await migrateSession(sourceContext, hosted.id, peer, { ...drainOptions, mode: 'always' }))
        } catch (err) {
          logger.warn({ sessionId: hosted.id, err: errorMessage(err) }, 'drain could not move a session')
          result.failed.push({ sessionId: hosted.id, code: (err as { code?: string }).code ?? 'ERR_INTERNAL', message: errorMessage(err) })
        }
      }
      return result
    },
    checkpoint (sessionId, checkpointOptions = {}) {
      const hosted = sessions.require(sessionId)
      const positions = sessionPositions(hosted.session)
      const from = checkpointOptions.fromPosition ?? 0
      const snapshot = extractKv(hosted.session.caches)
      const tokens = hosted.shareTokenIds && hosted.session.tokens.length === positions ? hosted.session.tokens.slice(from) : null
      const encoder = new UsxfEncoder(kvStateInput(hosted.model.manifest, snapshot, { tokenIds: tokens, positionStart: from }), { signer: options.identity, ...checkpointOptions })
      return { header: encoder.header, records: () => encoder.records() }
    },
    async restore (source, restoreOptions) {
      const sessionId = validateSessionId(restoreOptions.sessionId)
      const target: { model: LocalModel | null, snapshot: KvCacheSnapshot | null, existing: HostedSession | null } = { model: null, snapshot: null, existing: null }
      const decoder = new UsxfDecoder({
        expectedProducer: restoreOptions.producer,
        maxPayloadBytes: maxStateBytes,
        onHeader: async (header) => {
          const model = await options.models.find(header.model)
          if (model === undefined) throw new UsxfModelMismatchError(`this node has no model with weights ${header.model.weightsSha256.slice(0, 12)}…`)
          checkStateFits(header, model.manifest, model.maxContext)
          if (header.layerStart !== 0 || header.layerEnd !== model.manifest.spec.numLayers) throw new UsxfShapeMismatchError('a checkpoint restores whole sessions')
          const existing = sessions.get(sessionId) ?? null
          if (header.positionStart === 0 && existing !== null) throw new UsxfSessionBusyError(`session ${sessionId} already exists`)
          if (existing !== null && existing.state !== 'live') throw new UsxfSessionBusyError(`session ${sessionId} is being migrated`)
          if (header.positionStart > 0) {
            if (existing === null) throw new UsxfShapeMismatchError(`an incremental checkpoint (from position ${header.positionStart}) needs session ${sessionId} here`)
            if (existing.model !== model) throw new UsxfModelMismatchError(`session ${sessionId} runs another model`)
            if (sessionPositions(existing.session) !== header.positionStart) throw new UsxfShapeMismatchError(`session ${sessionId} holds ${sessionPositions(existing.session)} positions; the checkpoint continues from ${header.positionStart}`)
          }
          const { snapshot, planes } = allocateKv(header)
          Object.assign(target, { model, snapshot, existing })
          return { planes }
        }
      })
      for await (const record of splitRecords(source)) {
        restoreOptions.signal?.throwIfAborted()
        await decoder.push(record)
      }
      const state = decoder.finish()
      const { model, snapshot, existing } = target
      if (model === null || snapshot === null) throw new UsxfShapeMismatchError('no state')
      if (existing !== null) {
        sessions.acquire(sessionId)
        try {
          attachKv(existing.session.caches, snapshot, state.header.positionStart)
          if (state.header.tokenIds !== null && existing.session.tokens.length === state.header.positionStart) existing.session.tokens.push(...state.header.tokenIds)
        } finally {
          sessions.releaseHold(sessionId)
        }
        return existing
      }
      const session = model.newSession()
      attachKv(session.caches, snapshot, 0)
      if (state.header.tokenIds !== null) session.tokens.push(...state.header.tokenIds)
      return sessions.add(sessionId, model, session, { shareTokenIds: state.header.tokenIds !== null })
    },
    prefillRate
  }
  return service
}

/** Times a prefill of `tokens` positions on a scratch session (after a short warm-up run). */
async function measurePrefillRate (model: LocalModel, tokens: number): Promise<number> {
  const vocab = model.manifest.spec.vocabSize
  const count = Math.max(2, Math.min(tokens, model.maxContext))
  const ids = Array.from({ length: count }, (_, i) => (i * 7919 + 3) % vocab)
  const session = model.newSession()
  await session.forward(ids.slice(0, 2))
  session.reset()
  const started = performance.now()
  await session.forward(ids)
  const seconds = (performance.now() - started) / 1000
  session.reset()
  return count / Math.max(seconds, 1e-6)
}
