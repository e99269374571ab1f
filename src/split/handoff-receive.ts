import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { KvCache, KvCacheSnapshot } from '../inference/index.ts'
import { RequestError } from '../mesh/index.ts'
import type { ModelManifest } from '../model/index.ts'
import type { HandoffOffer } from '../pb/infer.ts'
import { attachKv, allocateKv, checkStateFits, peerPublicKey, UsxfDecoder, UsxfShapeMismatchError, UsxfTruncatedError, type UsxfHeaderInfo } from '../usxf/index.ts'
import type { Logger } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { HANDOFF_ERRORS } from './handoff-errors.ts'
import { HANDOFF_WINDOW_BYTES, remoteHandoffError, type HandoffWire } from './handoff-wire.ts'
import { bytesToHex, validSessionId } from './protocol.ts'

/** What the target of a hand-off needs from its layer server. */
export interface HandoffReceiver {
  manifest: ModelManifest
  span: { start: number, end: number }
  /** Positions a session may reach here. */
  maxLength: number
  ioTimeoutMs: number
  handoffMs: number
  logger: Logger
  /**
   * Checks the server can take this client's session now (draining, client policy, room, an id
   * already in use) and reserves its key; throws a typed refusal.
   */
  reserve: (offer: HandoffOffer, client: PeerId, source: PeerId) => string
  unreserve: (key: string) => void
  newCache: () => KvCache
  /** The verified cache becomes an adopted session, held for the client. */
  adopt: (key: string, offer: HandoffOffer, cache: KvCache, source: PeerId) => void
}

function refuse (code: string, message: string): SplitInferenceError {
  return new SplitInferenceError(code, message)
}

/** Refuses an offer this server cannot take, before anything is reserved. */
function checkOffer (offer: HandoffOffer, ctx: HandoffReceiver): PeerId {
  const m = ctx.manifest
  if (offer.handoffId.byteLength !== 16) throw refuse(INFER_ERRORS.invalidMessage, 'a hand-off id is 16 bytes')
  if (!validSessionId(offer.sessionId)) throw refuse(INFER_ERRORS.invalidMessage, 'a session id is 1-128 letters, digits, ".", "_", ":" or "-"')
  let client: PeerId
  try {
    if (offer.clientPeer.length > 128) throw new Error('too long')
    client = peerIdFromString(offer.clientPeer)
  } catch (err) {
    throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'the offer\'s client is not a peer id', { cause: err })
  }
  if (bytesToHex(offer.configSha256) !== m.configSha256 || bytesToHex(offer.weightsSha256) !== m.weightsSha256) {
    throw refuse(INFER_ERRORS.wrongModel, `this server runs model ${m.weightsSha256.slice(0, 12)}…, not ${bytesToHex(offer.weightsSha256).slice(0, 12)}…`)
  }
  if (offer.layerStart !== ctx.span.start || offer.layerEnd !== ctx.span.end) {
    throw refuse(INFER_ERRORS.wrongSpan, `this server serves layers ${ctx.span.start}-${ctx.span.end}, not ${offer.layerStart}-${offer.layerEnd}`)
  }
  if (offer.maxLength < 1 || offer.maxLength > ctx.maxLength) throw refuse(INFER_ERRORS.maxLength, `max length must be in 1..${ctx.maxLength}, got ${offer.maxLength}`)
  if (offer.positions > offer.maxLength) throw refuse(INFER_ERRORS.maxLength, `the session holds ${offer.positions} positions, more than its max length ${offer.maxLength}`)
  // every step carries at least one row: a session with positions has taken at least one step, and at most one per position
  if (offer.nextStep > offer.positions || (offer.positions === 0) !== (offer.nextStep === 0)) {
    throw refuse(INFER_ERRORS.invalidMessage, `step ${offer.nextStep} cannot follow ${offer.positions} positions`)
  }
  return client
}

/**
 * Serves one inbound hand-off on `wire` (the target's side): checks the offer, reserves the
 * client's key, decodes the signed state into staging arrays (CRC per record, producer = the
 * source's peer key, model, shape, span and length checked from the header before any payload,
 * signature and block hashes at the trailer), attaches it into a fresh cache, holds that as an
 * adopted session and only then answers `adopted`. Any failure drops everything staged: the
 * server's sessions are as before.
 */
export async function receiveHandoff (wire: HandoffWire, source: PeerId, ctx: HandoffReceiver, stopped: AbortSignal): Promise<void> {
  const signal = AbortSignal.any([stopped, AbortSignal.timeout(ctx.handoffMs)])
  const read = { signal, timeoutMs: ctx.ioTimeoutMs }
  const sendBy = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(ctx.ioTimeoutMs)])
  const log = ctx.logger.child({ from: source.toString() })
  let reserved: string | null = null
  try {
    const offer = await wire.expect('offer', read)
    const client = checkOffer(offer, ctx)
    reserved = ctx.reserve(offer, client, source)
    await wire.sendControl({ accept: { windowBytes: HANDOFF_WINDOW_BYTES } }, sendBy())

    const spec = ctx.manifest.spec
    const layers = ctx.span.end - ctx.span.start
    const staging: { snapshot: KvCacheSnapshot | null } = { snapshot: null }
    const decoder = new UsxfDecoder({
      expectedProducer: peerPublicKey(source),
      // bounded by the session's max length (checked against this server's); the header must then match the offer exactly
      maxPayloadBytes: offer.maxLength * layers * 2 * spec.numKvHeads * spec.headDim * 4,
      onHeader: (header: UsxfHeaderInfo) => {
        checkStateFits(header, ctx.manifest, ctx.maxLength)
        if (header.layerStart !== ctx.span.start || header.layerEnd !== ctx.span.end || header.positionStart !== 0 || header.seqLen !== offer.positions) {
          throw new UsxfShapeMismatchError(`the state carries layers ${header.layerStart}-${header.layerEnd}, positions ${header.positionStart}+${header.seqLen}; the offer said ${ctx.span.start}-${ctx.span.end}, 0+${offer.positions}`)
        }
        // a span cache moves exactly (f32, no quantization): the session continues bit for bit
        if (header.dtype !== 'f32' || header.quantization !== 'none' || header.tokenIds !== null) {
          throw new UsxfShapeMismatchError(`a hand-off carries f32 caches unquantized and no token ids; got ${header.dtype}/${header.quantization}${header.tokenIds !== null ? ' with token ids' : ''}`)
        }
        const { snapshot, planes } = allocateKv(header)
        staging.snapshot = snapshot
        return { planes }
      }
    })
    let received = 0
    let credited = 0
    while (!decoder.done) {
      const message = await wire.receive(read).catch((err: unknown) => {
        if (err instanceof RequestError && err.code === 'ERR_STREAM_CLOSED') throw new UsxfTruncatedError('the hand-off stream ended before the state\'s trailer')
        throw err
      })
      if (message.kind === 'control') {
        if (message.control.error != null) throw remoteHandoffError(message.control.error)
        throw refuse(HANDOFF_ERRORS.handoffProtocol, 'hand-off protocol: a control message inside the state')
      }
      received += message.record.byteLength
      await decoder.push(message.record)
      if (received - credited >= HANDOFF_WINDOW_BYTES / 4) {
        credited = received
        await wire.sendControl({ credit: { bytes: BigInt(credited) } }, sendBy())
      }
    }
    decoder.finish()
    if (staging.snapshot === null) throw refuse(HANDOFF_ERRORS.handoffProtocol, 'hand-off protocol: no state arrived')
    const cache = ctx.newCache()
    attachKv([cache], staging.snapshot, 0)
    ctx.adopt(reserved, offer, cache, source)
    reserved = null
    log.info({ session: offer.sessionId, positions: offer.positions }, 'session adopted by hand-off')
    try {
      await wire.sendControl({ adopted: { handoffId: offer.handoffId } }, sendBy())
      await wire.close(sendBy())
    } catch (err) {
      // The source keeps serving without this ack; the adopted copy expires unclaimed.
      log.warn({ session: offer.sessionId, err: (err as Error).message }, 'could not acknowledge an adopted session')
      wire.abort(err as Error)
    }
  } catch (err) {
    if (err instanceof SplitInferenceError && err.remote) {
      log.info({ code: err.code }, 'hand-off withdrawn by the source')
      wire.abort(err)
      return
    }
    log.info({ code: (err as { code?: string }).code, err: (err as Error).message }, 'hand-off refused')
    try {
      // reply, then close our end gracefully so the reply is not discarded
      await wire.sendError(err, AbortSignal.timeout(ctx.ioTimeoutMs))
      await wire.close(AbortSignal.timeout(ctx.ioTimeoutMs))
    } catch {
      wire.abort(err as Error)
    }
  } finally {
    if (reserved !== null) ctx.unreserve(reserved)
  }
}
