import type { Libp2p, PeerId, Stream, Connection } from '@libp2p/interface'
import { Stage, type KvCache } from '../inference/index.ts'
import { MessageChannel, RequestError } from '../mesh/index.ts'
import { loadManifest, type ModelManifest } from '../model/index.ts'
import { decodeActivationFrame, encodeActivationFrame, FRAME_HEADER_BYTES } from '../usxf/index.ts'
import { InferRequest, InferResponse, type InferInfo, type InferOpen, type InferStep } from '../pb/infer.ts'
import { errorMessage, InvalidInputError, PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { aligned, bytesToHex, hexToBytes, INFER_PROTOCOL, maxInferMessageBytes, requestKind, validSessionId } from './protocol.ts'

export interface LayerServerLimits {
  /** Sessions held at once, over all clients (default 16). */
  maxSessions: number
  /** Positions one session may reach (default min(model max positions, 2048)). */
  maxLength: number
  /** Rows in one step (default maxLength: a whole prompt, or a failover replay, is one step). */
  maxStepRows: number
  /** A session's stream with no message for this long is dropped with its cache (default 60 s). */
  idleTimeoutMs: number
  /** Deadline for writing one reply (default 30 s). */
  writeTimeoutMs: number
  /** Inbound streams at once (default maxSessions + 4: a few for streams that are refused). */
  maxInboundStreams: number
}

export interface LayerServerOptions {
  libp2p: Libp2p
  /** The node's data dir, holding the model store. */
  dataDir: string
  /** Stored model name. */
  model: string
  /** The span served: layers [start, end), never the embeddings or the LM head. */
  layers: { start: number, end: number }
  logger?: Logger
  limits?: Partial<LayerServerLimits>
  /** onnxruntime intra-op threads for the stage. */
  threads?: number
  /** Peers allowed to open sessions (default: any peer the connection gater admits). */
  acceptFrom?: (peer: PeerId) => boolean
}

export interface LayerServerStats {
  /** Sessions held now. */
  sessions: number
  /** Sessions opened since start. */
  opened: number
  steps: number
  errors: Record<string, number>
  /** Measured compute of one decode row per layer, ms (calibrated at start, then from decode steps). */
  msPerLayer: number
}

export interface LayerServer {
  readonly protocol: string
  /** Set once started. */
  readonly manifest: ModelManifest | null
  readonly span: { start: number, end: number }
  readonly limits: LayerServerLimits
  start: () => Promise<void>
  stop: () => Promise<void>
  stats: () => LayerServerStats
}

interface ServerSession {
  id: string
  key: string
  cache: KvCache
  maxLength: number
  nextStep: number
}

function fail (code: string, message: string): SplitInferenceError {
  return new SplitInferenceError(code, message)
}

/**
 * Serves one span of a stored model over /permagent/infer/1.0.0: one session per stream, a KV
 * cache per session, typed error replies that leave the stream and every other session serving.
 */
export function createLayerServer (options: LayerServerOptions): LayerServer {
  const logger = (options.logger ?? silentLogger()).child({ module: 'split-server' })
  const span = { start: options.layers.start, end: options.layers.end }
  if (!Number.isInteger(span.start) || !Number.isInteger(span.end) || span.start < 1 || span.end <= span.start) {
    throw new InvalidInputError(`a layer server serves layers [start, end) with 1 <= start < end; got ${span.start}-${span.end}`)
  }
  const sessions = new Map<string, ServerSession>()
  const streams = new Set<AbortController>()
  const running = new Set<Promise<void>>()
  const counters = { opened: 0, steps: 0, errors: {} as Record<string, number> }
  let limits: LayerServerLimits = {
    maxSessions: 16,
    maxLength: 2048,
    maxStepRows: 2048,
    idleTimeoutMs: 60_000,
    writeTimeoutMs: 30_000,
    maxInboundStreams: 20,
    ...options.limits
  }
  let stage: Stage | null = null
  let stopping = false
  let manifest: ModelManifest | null = null
  let maxMessageBytes = 0
  let msPerLayer = 0

  const open = (request: InferOpen, peer: PeerId, current: ServerSession | null): { session: ServerSession, response: InferResponse } => {
    const m = manifest as ModelManifest
    const s = stage as Stage
    if (current !== null) throw fail(INFER_ERRORS.protocol, `this stream holds session ${current.id}; close it before opening another`)
    if (!validSessionId(request.sessionId)) throw fail(INFER_ERRORS.invalidMessage, 'a session id is 1-128 letters, digits, ".", "_", ":" or "-"')
    if (bytesToHex(request.configSha256) !== m.configSha256 || bytesToHex(request.weightsSha256) !== m.weightsSha256) {
      throw fail(INFER_ERRORS.wrongModel, `this server runs model ${m.weightsSha256.slice(0, 12)}…, not ${bytesToHex(request.weightsSha256).slice(0, 12)}…`)
    }
    if (request.layerStart !== span.start || request.layerEnd !== span.end) {
      throw fail(INFER_ERRORS.wrongSpan, `this server serves layers ${span.start}-${span.end}, not ${request.layerStart}-${request.layerEnd}`)
    }
    if (request.maxLength < 1 || request.maxLength > limits.maxLength) throw fail(INFER_ERRORS.maxLength, `max length must be in 1..${limits.maxLength}, got ${request.maxLength}`)
    if (!(options.acceptFrom?.(peer) ?? true)) throw fail(INFER_ERRORS.peerRefused, 'this server does not take sessions from this peer')
    const key = `${peer.toString()}/${request.sessionId}`
    if (sessions.has(key)) throw fail(INFER_ERRORS.sessionExists, `session ${request.sessionId} is open on another stream`)
    if (sessions.size >= limits.maxSessions) throw fail(INFER_ERRORS.serverFull, `this server holds ${sessions.size} sessions, its limit`)
    const session: ServerSession = { id: request.sessionId, key, cache: s.newCache(), maxLength: request.maxLength, nextStep: 0 }
    sessions.set(key, session)
    counters.opened++
    return { session, response: { opened: { sessionId: session.id, maxLength: session.maxLength, hiddenSize: m.spec.hiddenSize, maxStepRows: limits.maxStepRows } } }
  }

  const step = async (request: InferStep, session: ServerSession | null): Promise<InferResponse> => {
    const m = manifest as ModelManifest
    if (session === null || session.id !== request.sessionId) throw fail(INFER_ERRORS.unknownSession, `no session ${request.sessionId.slice(0, 128)} on this stream`)
    const bytes = request.frame
    if (bytes.byteLength >= FRAME_HEADER_BYTES && bytes[0] === 0x55 && bytes[1] === 0x58) {
      // refuse an oversize tensor from its header, before decoding the payload
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      const rows = view.getUint32(16, true)
      const width = view.getUint32(20, true)
      if (rows > limits.maxStepRows || rows * width > limits.maxStepRows * m.spec.hiddenSize) {
        throw fail(INFER_ERRORS.tensorTooLarge, `a step carries at most ${limits.maxStepRows} rows of ${m.spec.hiddenSize}; got ${rows} x ${width}`)
      }
    }
    const frame = decodeActivationFrame(aligned(bytes), { width: m.spec.hiddenSize, maxRows: limits.maxStepRows })
    if (frame.rows === 0) throw fail(INFER_ERRORS.invalidMessage, 'a step carries at least one row')
    if (frame.step !== session.nextStep) throw fail(INFER_ERRORS.outOfOrder, `expected step ${session.nextStep}, got ${frame.step}`)
    if (frame.positionStart !== session.cache.length) throw fail(INFER_ERRORS.outOfOrder, `expected position ${session.cache.length}, got ${frame.positionStart}`)
    if (frame.positionStart + frame.rows > session.maxLength) throw fail(INFER_ERRORS.maxLength, `the session would reach ${frame.positionStart + frame.rows} positions; it was opened for ${session.maxLength}`)
    const started = performance.now()
    const out = await (stage as Stage).run({ hidden: frame.values }, session.cache)
    const computeMs = performance.now() - started
    // decode steps (one row) keep the per-layer estimate current
    if (frame.rows === 1) msPerLayer = 0.9 * msPerLayer + 0.1 * computeMs / (span.end - span.start)
    session.nextStep++
    counters.steps++
    const reply = encodeActivationFrame({ step: frame.step, positionStart: frame.positionStart, rows: frame.rows, width: m.spec.hiddenSize, values: out.hidden as Float32Array }, { quantization: frame.quantization, quantGroup: bytes[4] | (bytes[5] << 8) })
    return { result: { frame: reply as Uint8Array<ArrayBuffer>, computeMs } }
  }

  const info = (): InferInfo => {
    const m = manifest as ModelManifest
    return {
      configSha256: hexToBytes(m.configSha256) as Uint8Array<ArrayBuffer>,
      weightsSha256: hexToBytes(m.weightsSha256) as Uint8Array<ArrayBuffer>,
      layerStart: span.start,
      layerEnd: span.end,
      maxLength: limits.maxLength,
      maxStepRows: limits.maxStepRows,
      freeSessions: Math.max(0, limits.maxSessions - sessions.size),
      msPerLayer
    }
  }

  const serve = async (stream: Stream, connection: Connection): Promise<void> => {
    const controller = new AbortController()
    streams.add(controller)
    const peer = connection.remotePeer
    const channel = new MessageChannel(INFER_PROTOCOL, stream, peer, maxMessageBytes)
    let session: ServerSession | null = null
    const release = (): void => {
      if (session !== null) sessions.delete(session.key)
      session = null
    }
    try {
      while (!controller.signal.aborted && !stopping) {
        let bytes: Awaited<ReturnType<MessageChannel['receive']>>
        try {
          bytes = await channel.receive({ signal: controller.signal, timeoutMs: limits.idleTimeoutMs, timeoutCode: 'ERR_IDLE_TIMEOUT' })
        } catch (err) {
          if (err instanceof RequestError && err.code === 'ERR_MESSAGE_TOO_LARGE') {
            // the rest of the stream cannot be framed any more: reply, then end it
            await channel.send(InferResponse.encode({ error: { code: INFER_ERRORS.tensorTooLarge, message: `a message is at most ${maxMessageBytes} bytes` } }), AbortSignal.timeout(limits.writeTimeoutMs)).catch(() => {})
          } else if (err instanceof RequestError && err.code === 'ERR_IDLE_TIMEOUT') {
            logger.debug({ peer: peer.toString(), session: session?.id }, 'idle session dropped')
          }
          break
        }
        let response: InferResponse
        try {
          let request: InferRequest
          try {
            request = InferRequest.decode(bytes)
          } catch (err) {
            throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'the request is not valid protobuf', { cause: err })
          }
          const kind = requestKind(request)
          if (kind === 'open') {
            const opened = open(request.open as InferOpen, peer, session)
            session = opened.session
            response = opened.response
          } else if (kind === 'step') {
            response = await step(request.step as InferStep, session)
          } else if (kind === 'info') {
            response = { info: info() }
          } else {
            const id = request.close?.sessionId ?? ''
            if (session === null || session.id !== id) throw fail(INFER_ERRORS.unknownSession, `no session ${id.slice(0, 128)} on this stream`)
            release()
            response = { closed: { sessionId: id } }
          }
        } catch (err) {
          const code = err instanceof PermagentError ? err.code : INFER_ERRORS.internal
          if (!(err instanceof PermagentError)) logger.warn({ err: errorMessage(err) }, 'a step failed')
          counters.errors[code] = (counters.errors[code] ?? 0) + 1
          response = { error: { code, message: err instanceof PermagentError ? err.message.slice(0, 1024) : 'the server failed to run the step' } }
        }
        await channel.send(InferResponse.encode(response), AbortSignal.any([controller.signal, AbortSignal.timeout(limits.writeTimeoutMs)]))
      }
    } catch (err) {
      logger.debug({ peer: peer.toString(), err: errorMessage(err) }, 'inference stream ended')
      channel.abort(err as Error)
    } finally {
      release()
      streams.delete(controller)
      await channel.close(AbortSignal.timeout(limits.writeTimeoutMs)).catch(() => {})
    }
  }

  const server: LayerServer = {
    protocol: INFER_PROTOCOL,
    get manifest () { return manifest },
    span,
    get limits () { return limits },
    async start () {
      if (stage !== null) return
      const m = await loadManifest(options.dataDir, options.model)
      if (span.end >= m.spec.numLayers) throw new InvalidInputError(`a layer server leaves the last layer to the client: span must end before ${m.spec.numLayers}`)
      const maxLength = Math.min(options.limits?.maxLength ?? Math.min(m.spec.maxPositions, 2048), m.spec.maxPositions)
      limits = {
        ...limits,
        maxLength,
        maxStepRows: Math.min(options.limits?.maxStepRows ?? maxLength, maxLength),
        maxInboundStreams: options.limits?.maxInboundStreams ?? limits.maxSessions + 4
      }
      for (const [name, value] of Object.entries(limits)) {
        if (!Number.isInteger(value) || value < 1) throw new InvalidInputError(`limit ${name} must be a positive integer`)
      }
      maxMessageBytes = maxInferMessageBytes(limits.maxStepRows, m.spec.hiddenSize)
      const opened = await Stage.open(options.dataDir, m, { start: span.start, end: span.end, embed: false, lmHead: false }, { maxContext: maxLength, threads: options.threads, spinning: false })
      try {
        msPerLayer = await calibrate(opened, m)
        await options.libp2p.handle(INFER_PROTOCOL, async (stream, connection) => {
          const served = serve(stream, connection)
          running.add(served)
          try { await served } finally { running.delete(served) }
        }, { maxInboundStreams: limits.maxInboundStreams })
      } catch (err) {
        await opened.close()
        throw err
      }
      stage = opened
      manifest = m
      logger.info({ model: m.name, span, maxLength }, 'layer server started')
    },
    async stop () {
      if (stage === null || stopping) return
      stopping = true
      try {
        await options.libp2p.unhandle(INFER_PROTOCOL)
        for (const controller of streams) controller.abort(new Error('the layer server stopped'))
        // a step in flight finishes before its stage is released
        await Promise.allSettled([...running])
        sessions.clear()
        await stage.close()
      } finally {
        stage = null
        stopping = false
      }
    },
    stats: () => ({ sessions: sessions.size, opened: counters.opened, steps: counters.steps, errors: { ...counters.errors }, msPerLayer })
  }
  return server
}

/** Compute of one decode row per layer, ms: the best of a few one-row steps on a scratch cache after a warm-up. */
async function calibrate (stage: Stage, manifest: ModelManifest): Promise<number> {
  const cache = stage.newCache()
  const hidden = new Float32Array(manifest.spec.hiddenSize).fill(0.01)
  let best = Infinity
  for (let i = 0; i < 4; i++) {
    const started = performance.now()
    await stage.run({ hidden }, cache)
    if (i > 0) best = Math.min(best, performance.now() - started)
  }
  return best / stage.layers
}
