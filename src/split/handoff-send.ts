import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { KvCache } from '../inference/index.ts'
import type { ModelManifest } from '../model/index.ts'
import { extractKv, kvStateInput, UsxfEncoder, type UsxfSigner } from '../usxf/index.ts'
import { SplitInferenceError } from './errors.ts'
import { HANDOFF_ERRORS } from './handoff-errors.ts'
import { HANDOFF_CHUNK_BYTES, HANDOFF_WINDOW_BYTES, HandoffWire } from './handoff-wire.ts'
import { hexToBytes } from './protocol.ts'

/** What the source of a hand-off needs: its node, its signer (the node's identity) and its deadlines. */
export interface HandoffSender {
  libp2p: Libp2p
  /** Signs the state; must be the key of `libp2p`'s peer id (the target checks the producer against it). */
  signer: UsxfSigner
  manifest: ModelManifest
  span: { start: number, end: number }
  dialMs: number
  /** Deadline for every read and write on the hand-off stream. */
  ioTimeoutMs: number
  /** Deadline for the whole hand-off of one session. */
  handoffMs: number
  signal: AbortSignal
}

/** The session being handed over; its steps are held while this runs, so the cache does not move. */
export interface OutgoingSession {
  client: PeerId
  sessionId: string
  cache: KvCache
  maxLength: number
  nextStep: number
}

export interface HandoffReport {
  positions: number
  /** USXF bytes sent (records with framing). */
  streamBytes: number
  ms: number
}

/**
 * Sends one session's span cache to `to` as a signed USXF kv state (f32, exact) and waits until the
 * target holds it for the client. Resolves only on the target's `adopted`: until then the caller
 * keeps serving the session; on any error the target has dropped (or never took) its copy.
 */
export async function sendSessionState (ctx: HandoffSender, to: PeerId, session: OutgoingSession): Promise<HandoffReport> {
  const started = performance.now()
  const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(ctx.handoffMs)])
  const read = { signal, timeoutMs: ctx.ioTimeoutMs }
  const sendBy = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(ctx.ioTimeoutMs)])
  const handoffId = new Uint8Array(randomBytes(16))
  const positions = session.cache.length
  const wire = await HandoffWire.open(ctx.libp2p, to, { dialMs: ctx.dialMs, signal })
  try {
    await wire.sendControl({
      offer: {
        handoffId,
        clientPeer: session.client.toString(),
        sessionId: session.sessionId,
        configSha256: hexToBytes(ctx.manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(ctx.manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: ctx.span.start,
        layerEnd: ctx.span.end,
        positions,
        nextStep: session.nextStep,
        maxLength: session.maxLength
      }
    }, sendBy())
    const accept = await wire.expect('accept', read)
    // never more than this build's window, whatever the target says: the stream's read buffer is bounded
    const window = Math.min(Math.max(1, accept.windowBytes), HANDOFF_WINDOW_BYTES)
    // a zero-copy snapshot: steps are held, and the runtime replaces cache arrays rather than writing into them
    const input = kvStateInput(ctx.manifest, extractKv([session.cache], { layerStart: ctx.span.start, layerEnd: ctx.span.end }))
    const encoder = new UsxfEncoder(input, { signer: ctx.signer, quantization: 'none', chunkBytes: HANDOFF_CHUNK_BYTES, headroom: 1 })
    let sent = 0
    let credited = 0
    for await (const record of encoder.records()) {
      // flow control over record bytes: the target credits what it has decoded
      while (sent - credited >= window) credited = Number((await wire.expect('credit', read)).bytes)
      sent += record.byteLength - 1
      await wire.sendRecord(record, sendBy())
    }
    const adopted = await wire.expect('adopted', read, true)
    if (Buffer.compare(adopted.handoffId, handoffId) !== 0) throw new SplitInferenceError(HANDOFF_ERRORS.handoffProtocol, 'the target adopted another hand-off than the one offered')
    await wire.close(sendBy()).catch(() => {})
    return { positions, streamBytes: sent, ms: performance.now() - started }
  } catch (err) {
    if (!(err instanceof SplitInferenceError && err.remote)) await wire.sendError(err, AbortSignal.timeout(ctx.ioTimeoutMs)).catch(() => {})
    wire.abort(err as Error)
    throw err
  }
}
