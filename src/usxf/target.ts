import type { PeerId } from '@libp2p/interface'
import type { KvCacheSnapshot, LocalModel, ModelSession } from '../inference/index.ts'
import { RequestError } from '../mesh/index.ts'
import type { Logger } from '../util/index.ts'
import { UsxfDecoder } from './decoder.ts'
import {
  UsxfTruncatedError, UsxfContextExceededError, UsxfModelMismatchError, UsxfProducerError, UsxfProtocolError, UsxfRefusedError, UsxfSessionBusyError, UsxfShapeMismatchError
} from './errors.ts'
import { greedyContinuation } from './fidelity.ts'
import { QUANTIZATIONS, quantizationCode, quantizationFromCode, toHex, type UsxfHeaderInfo } from './format.ts'
import { allocateKv, attachKv, checkStateFits } from './kv.ts'
import { validateSessionId, type ModelCatalog, type SessionTable } from './sessions.ts'
import { WINDOW_BYTES, remoteError, type MigrationWire } from './wire.ts'

/** What the receiving side of a migration needs from its service. */
export interface TargetContext {
  models: ModelCatalog
  sessions: SessionTable
  /** Session ids reserved by migrations in flight (so two cannot race for one id). */
  reserved: Set<string>
  logger: Logger
  acceptFrom: (peer: PeerId) => boolean
  maxStateBytes: number
  readTimeoutMs: number
  /** Deadline for a whole inbound migration. */
  maxMigrationMs: number
  maxFidelityTokens: number
  prefillRate: (model: LocalModel) => Promise<number>
  /** Told how every inbound migration ended. */
  onInbound?: (event: InboundEvent) => void
}

/** How an inbound migration ended, for logs, metrics and tests. */
export interface InboundEvent {
  peer: string
  sessionId: string | null
  outcome: 'committed' | 'aborted' | 'withdrawn' | 'refused'
  /** The error code of a refusal (the code the source was sent), or of the source's own error. */
  code: string | null
  message: string | null
}

/** The raw Ed25519 key behind a peer id: the only producer a migration stream may be signed by. */
export function peerPublicKey (peer: PeerId): Uint8Array {
  if (peer.type !== 'Ed25519') throw new UsxfProducerError(`peer ${peer.toString()} has no Ed25519 key`)
  return peer.publicKey.raw
}

/**
 * Serves one inbound migration on `wire` (the target's stages 1, 2, 5-8). Nothing becomes visible
 * until the source commits: the state decodes into a fresh, unregistered session; any refusal,
 * corruption, timeout or abort drops it, leaving the node's sessions exactly as they were.
 */
export async function serveMigration (wire: MigrationWire, remotePeer: PeerId, ctx: TargetContext, stopped: AbortSignal): Promise<void> {
  // the whole migration has a deadline (a source trickling chunks cannot hold a slot forever), and
  // so does every read and every send
  const signal = AbortSignal.any([stopped, AbortSignal.timeout(ctx.maxMigrationMs)])
  const read = { signal, timeoutMs: ctx.readTimeoutMs }
  const sendBy = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(ctx.readTimeoutMs)])
  let reserved: string | null = null
  let sessionId: string | null = null
  const log = ctx.logger.child({ peer: remotePeer.toString() })
  const report = (outcome: InboundEvent['outcome'], err?: unknown): void => {
    ctx.onInbound?.({ peer: remotePeer.toString(), sessionId, outcome, code: err === undefined ? null : (err as { code?: string }).code ?? 'ERR_INTERNAL', message: err === undefined ? null : (err as Error).message })
  }
  try {
    // 1. capability exchange
    const offer = await wire.expect('offer', read)
    if (!ctx.acceptFrom(remotePeer)) throw new UsxfRefusedError('this node does not accept migrations from you')
    if (!ctx.sessions.open) throw new UsxfRefusedError('this node is draining')
    if (ctx.sessions.size + ctx.reserved.size >= ctx.sessions.capacity) throw new UsxfRefusedError(`this node hosts its limit of ${ctx.sessions.capacity} sessions`)
    sessionId = validateSessionId(offer.sessionId)
    if (offer.model == null) throw new UsxfProtocolError('the offer names no model')
    const identity = { configSha256: toHex(offer.model.configSha256), weightsSha256: toHex(offer.model.weightsSha256) }
    const model = await ctx.models.find(identity)
    if (model === undefined) throw new UsxfModelMismatchError(`this node has no model with config ${identity.configSha256.slice(0, 12)}… and weights ${identity.weightsSha256.slice(0, 12)}…`)
    const spec = model.manifest.spec
    if (offer.layerStart !== 0 || offer.layerEnd !== spec.numLayers) throw new UsxfShapeMismatchError(`this node hosts whole sessions (layers 0-${spec.numLayers}), not ${offer.layerStart}-${offer.layerEnd}`)
    if (offer.seqLen > model.maxContext) throw new UsxfContextExceededError(offer.seqLen, model.maxContext)
    if (Number(offer.rawBytes) > ctx.maxStateBytes) throw new UsxfRefusedError(`the state is ${offer.rawBytes} bytes; this node takes at most ${ctx.maxStateBytes}`)
    if (ctx.sessions.has(sessionId) || ctx.reserved.has(sessionId)) throw new UsxfSessionBusyError(`session ${sessionId} already exists here`)
    ctx.reserved.add(sessionId)
    reserved = sessionId
    await wire.sendControl({
      capabilities: {
        quantizations: QUANTIZATIONS.map(quantizationCode),
        maxContext: model.maxContext,
        prefillTokensPerSecond: await ctx.prefillRate(model),
        maxStateBytes: BigInt(ctx.maxStateBytes),
        freeSessions: 0
      }
    }, sendBy())

    // 2. the source probes the link and decides; it either begins or withdraws
    let begin = null
    while (begin === null) {
      const message = await wire.receive(read)
      if (message.kind !== 'control') throw new UsxfProtocolError('a record before the transfer began')
      const control = message.control
      if (control.probe != null) await wire.sendControl({ probeAck: { sequence: control.probe.sequence } }, sendBy())
      else if (control.begin != null) begin = control.begin
      else if (control.commit != null && !control.commit.commit) { log.debug({ sessionId, reason: control.commit.reason }, 'migration withdrawn'); report('withdrawn'); return }
      else throw remoteOrProtocolError(control, 'probe or begin')
    }
    const quantization = quantizationFromCode(begin.quantization)
    if (quantization === undefined) throw new UsxfProtocolError(`unknown quantization ${begin.quantization}`)
    const vocab = spec.vocabSize
    if (begin.probeToken >= vocab || (begin.hasPendingToken && begin.pendingToken >= vocab)) throw new UsxfProtocolError('token outside the vocabulary')
    const fidelityTokens = Math.min(offer.fidelityTokens, ctx.maxFidelityTokens)

    // 5-6. signed transfer, CRC-checked streaming into staging
    const startedAt = performance.now()
    const staging: { snapshot: KvCacheSnapshot | null } = { snapshot: null }
    const decoder = new UsxfDecoder({
      expectedProducer: peerPublicKey(remotePeer),
      maxPayloadBytes: ctx.maxStateBytes,
      onHeader: (header: UsxfHeaderInfo) => {
        checkStateFits(header, model.manifest, model.maxContext)
        if (header.positionStart !== 0 || header.seqLen !== offer.seqLen || header.layerStart !== 0 || header.layerEnd !== spec.numLayers) {
          throw new UsxfShapeMismatchError(`the header carries layers ${header.layerStart}-${header.layerEnd}, positions ${header.positionStart}+${header.seqLen}; the offer said 0-${spec.numLayers}, 0+${offer.seqLen}`)
        }
        if (header.quantization !== quantization) throw new UsxfProtocolError(`the stream is ${header.quantization}; ${quantization} was agreed`)
        const { snapshot, planes } = allocateKv(header)
        staging.snapshot = snapshot
        return { planes }
      }
    })
    let credited = 0
    while (!decoder.done) {
      const message = await wire.receive(read).catch((err: unknown) => {
        if (err instanceof RequestError && err.code === 'ERR_STREAM_CLOSED') {
          throw new UsxfTruncatedError(`the stream ended after ${decoder.receivedPayloadBytes} of ${decoder.totalPayloadBytes} payload bytes`)
        }
        throw err
      })
      if (message.kind === 'control') throw remoteOrProtocolError(message.control, 'a USXF record')
      await decoder.push(message.record)
      if (decoder.receivedPayloadBytes - credited >= WINDOW_BYTES / 4) {
        credited = decoder.receivedPayloadBytes
        await wire.sendControl({ credit: { chunks: 0, bytes: BigInt(credited) } }, sendBy())
      }
    }
    const state = decoder.finish()
    const decodeMs = performance.now() - startedAt

    // 7. attach into a fresh session that nobody else can see yet, then check fidelity
    const attachStarted = performance.now()
    const session: ModelSession = model.newSession()
    if (staging.snapshot === null) throw new UsxfProtocolError('no state arrived')
    attachKv(session.caches, staging.snapshot, 0)
    if (state.header.tokenIds !== null) session.tokens.push(...state.header.tokenIds)
    const attachMs = performance.now() - attachStarted
    const fidelityStarted = performance.now()
    const continuation = await greedyContinuation(model, session, begin.probeToken, fidelityTokens, signal)
    await wire.sendControl({
      attached: { continuation: continuation.tokens, contextRoom: continuation.room, decodeMs, attachMs, fidelityMs: performance.now() - fidelityStarted }
    }, sendBy())

    // 8. two-phase commit: the session goes live only when the source says so
    const commit = await wire.expect('commit', read)
    if (!commit.commit) {
      log.info({ sessionId, reason: commit.reason }, 'migration aborted by the source')
      session.reset()
      report('aborted', Object.assign(new Error(commit.reason), { code: 'ERR_USXF_ABORTED' }))
      return
    }
    ctx.reserved.delete(sessionId)
    reserved = null
    ctx.sessions.add(sessionId, model, session, { pendingToken: begin.hasPendingToken ? begin.pendingToken : null, shareTokenIds: state.header.tokenIds !== null })
    report('committed')
    log.info({ sessionId, positions: state.header.seqLen, quantization }, 'session migrated in')
    try {
      await wire.sendControl({ committed: { sessionId } }, sendBy())
      await wire.close(sendBy())
    } catch (err) {
      // Committed here; the source will report the commit as unknown and keep its copy too.
      log.warn({ sessionId, err: (err as Error).message }, 'could not confirm a committed migration')
      wire.abort(err as Error)
    }
  } catch (err) {
    if (err instanceof RequestError && err.remote) {
      report('aborted', err)
      wire.abort(err)
      return
    }
    log.info({ err: (err as Error).message, code: (err as { code?: string }).code }, 'inbound migration refused')
    report('refused', err)
    try {
      // reply, then close our end gracefully so the reply is not discarded
      await wire.sendError(err, AbortSignal.timeout(5000))
      await wire.close(AbortSignal.timeout(5000))
    } catch {
      wire.abort(err as Error)
    }
  } finally {
    if (reserved !== null) ctx.reserved.delete(reserved)
  }
}

function remoteOrProtocolError (control: { error?: { code: string, message: string } }, expected: string): Error {
  return control.error != null ? remoteError(control.error) : new UsxfProtocolError(`expected ${expected}`)
}
