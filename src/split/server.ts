import type { Libp2p, PeerId, Stream, Connection } from '@libp2p/interface'
import { Stage, type KvCache } from '../inference/index.ts'
import { MessageChannel, RequestError } from '../mesh/index.ts'
import { loadManifest, type ModelManifest } from '../model/index.ts'
import { decodeActivationFrame, encodeActivationFrame, FRAME_HEADER_BYTES, peerPublicKey, type UsxfSigner } from '../usxf/index.ts'
import { InferRequest, InferResponse, type HandoffOffer, type InferInfo, type InferOpen, type InferStep } from '../pb/infer.ts'
import { errorMessage, InvalidInputError, PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { AdoptedSessions } from './handoff-adopted.ts'
import { HANDOFF_ERRORS, SessionMovedError } from './handoff-errors.ts'
import { receiveHandoff } from './handoff-receive.ts'
import { sendSessionState } from './handoff-send.ts'
import { HANDOFF_MAX_MESSAGE_BYTES, HANDOFF_PROTOCOL, HandoffWire } from './handoff-wire.ts'
import { aligned, bytesToHex, hexToBytes, INFER_PROTOCOL, maxInferMessageBytes, requestKind, validSessionId } from './protocol.ts'
import { PushInbox } from './push-inbox.ts'
import { servePushStream } from './push-receive.ts'
import { PushSender } from './push-send.ts'
import { parsePeerField, PUSH_BACKLOG, PUSH_MESSAGE_SLACK, PUSH_PROTOCOL } from './push-wire.ts'

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
  /** Hand-offs received at once (default 2). */
  maxInboundHandoffs: number
  /** Deadline for the whole hand-off of one session, either side (default 5 min). */
  handoffTimeoutMs: number
  /** Push: deadline for one push to the next server, dial + send + its accept (default 10 s). */
  pushTimeoutMs: number
  /** Push: how long a pushed step waits for its input from the upstream server (default 30 s). */
  pushWaitMs: number
  /** Inbound push streams at once (default maxSessions + 4). */
  maxInboundPushStreams: number
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
  /** Servers allowed to hand sessions to this one (default: any peer the connection gater admits). */
  acceptHandoffFrom?: (peer: PeerId) => boolean
}

export interface DrainOptions {
  /** Signs the handed-off states: the node's identity, whose key is this libp2p node's peer id. */
  identity: UsxfSigner
  signal?: AbortSignal
  /**
   * How long to wait, after the last hand-off, for the moved sessions' clients to come back and be
   * told where their session went (default 10 s); `stop()` after that ends the streams of the rest.
   */
  clientWaitMs?: number
}

export interface DrainedSession {
  client: string
  sessionId: string
  positions: number
  /** USXF bytes sent. */
  streamBytes: number
  ms: number
}

export interface DrainResult {
  to: string
  /** Sessions the target adopted; their clients resume them there with no replay. */
  moved: DrainedSession[]
  /** Sessions the target did not take: still served here until `stop()`, then their clients fail over by replay. */
  failed: Array<{ client: string, sessionId: string, code: string, message: string }>
  /** Moved sessions whose clients had not come back by the end of `clientWaitMs`. */
  awaitingClients: number
  ms: number
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
  state: 'stopped' | 'serving' | 'draining'
  /** Sessions handed to this server and not yet resumed by their clients. */
  adopted: number
  /** out: sessions this server handed off; in: adopted here; resumed: adopted and bound by their client; expired: adopted, never claimed. */
  handoffs: { out: number, in: number, resumed: number, expired: number }
  /** Push: outputs pushed to the next server, pushes taken from upstream, pushes refused (forged, unknown session, out of order). */
  pushes: { sent: number, received: number, refused: number }
}

export interface LayerServer {
  readonly protocol: string
  /** Set once started. */
  readonly manifest: ModelManifest | null
  readonly span: { start: number, end: number }
  readonly limits: LayerServerLimits
  start: () => Promise<void>
  /** Ends every stream; steps in flight finish first. */
  stop: () => Promise<void>
  /**
   * Hands every live session to `to` (a server of the same model and span) and takes no new ones:
   * each session's step in flight finishes, its next steps are held, its cache is sent as a signed
   * USXF state, and the session is released here only once the target has adopted it; its client
   * is then told where it went at its next step. Call `stop()` afterwards.
   */
  drain: (to: PeerId, options: DrainOptions) => Promise<DrainResult>
  stats: () => LayerServerStats
}

interface ServerSession {
  id: string
  key: string
  client: PeerId
  cache: KvCache
  maxLength: number
  nextStep: number
  /** The step being run (a hand-off waits for it). */
  inFlight: Promise<void> | null
  /** The hand-off being run (steps wait for it). */
  handoff: Promise<void> | null
  /** Where the session went: its cache is released, steps answer ERR_SESSION_MOVED. */
  movedTo: PeerId | null
  /** The client was told (or its stream ended). */
  told: boolean
  /** Push: where each step's output goes (the next hop's server), instead of the reply. */
  pushSender: PushSender | null
  /** Push: the inputs the named upstream server pushed; steps then carry no frame. */
  inbox: PushInbox | null
}

/** Refusals that any other session would get from the same target too: a drain stops trying after one. */
const TARGET_WIDE = new Set<string>([
  INFER_ERRORS.wrongModel, INFER_ERRORS.wrongSpan, HANDOFF_ERRORS.draining, HANDOFF_ERRORS.refused,
  'ERR_DIAL_FAILED', 'ERR_DIAL_TIMEOUT', 'ERR_ABORTED'
])

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
  const counters = { opened: 0, steps: 0, errors: {} as Record<string, number>, handoffs: { out: 0, in: 0, resumed: 0, expired: 0 }, pushes: { sent: 0, received: 0, refused: 0 } }
  let limits: LayerServerLimits = {
    maxSessions: 16,
    maxLength: 2048,
    maxStepRows: 2048,
    idleTimeoutMs: 60_000,
    writeTimeoutMs: 30_000,
    maxInboundStreams: 20,
    maxInboundHandoffs: 2,
    handoffTimeoutMs: 300_000,
    pushTimeoutMs: 10_000,
    pushWaitMs: 30_000,
    maxInboundPushStreams: 20,
    ...options.limits
  }
  let stage: Stage | null = null
  let stopping = false
  // set by drain() until stop(): no new sessions, resumes or inbound hand-offs
  let draining = false
  // one drain at a time; another may follow (e.g. to another target for the sessions that failed)
  let drainRunning = false
  let stopped = new AbortController()
  let manifest: ModelManifest | null = null
  let maxMessageBytes = 0
  let msPerLayer = 0
  // sessions handed here, held for their clients for as long as an idle stream would be
  let adopted = new AdoptedSessions(limits.idleTimeoutMs, () => {})
  // told whenever a moved session's client is told, or its stream ends (drain waits on it)
  const clientsChanged = new EventTarget()

  /** Sessions that hold a cache here: live ones (not moved away), adopted ones and hand-offs in flight. */
  const held = (): number => {
    let live = 0
    for (const session of sessions.values()) if (session.movedTo === null) live++
    return live + adopted.size
  }

  const markTold = (session: ServerSession): void => {
    if (session.movedTo === null || session.told) return
    session.told = true
    clientsChanged.dispatchEvent(new Event('told'))
  }

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
    if (draining) throw fail(HANDOFF_ERRORS.draining, 'this server is draining: it takes no new sessions')
    const key = `${peer.toString()}/${request.sessionId}`
    const wantsPush = (request.pushTo ?? '') !== '' || (request.upstream ?? '') !== ''
    if (request.resume === true && wantsPush) throw fail(INFER_ERRORS.protocol, 'a resumed session is relayed by its client: no push_to or upstream')
    if (request.resume === true) return resume(request, peer, key)
    const pushTo = (request.pushTo ?? '') !== '' ? parsePeerField(request.pushTo as string, 'push_to') : null
    const upstream = (request.upstream ?? '') !== '' ? parsePeerField(request.upstream as string, 'upstream') : null
    if (pushTo?.equals(options.libp2p.peerId) === true || upstream?.equals(options.libp2p.peerId) === true) throw fail(INFER_ERRORS.invalidMessage, 'a server does not push to itself')
    if (sessions.has(key) || adopted.holder(key)?.state === 'reserved') throw fail(INFER_ERRORS.sessionExists, `session ${request.sessionId} is open on another stream`)
    // the client replays this session into a fresh one (its resume failed): the adopted copy goes
    adopted.drop(key)
    if (held() >= limits.maxSessions) throw fail(INFER_ERRORS.serverFull, `this server holds ${held()} sessions, its limit`)
    const session = newSession(request.sessionId, key, peer, s.newCache(), request.maxLength, 0)
    if (pushTo !== null) session.pushSender = new PushSender({ libp2p: options.libp2p, to: pushTo, client: peer, sessionId: request.sessionId, maxMessageBytes: maxMessageBytes + PUSH_MESSAGE_SLACK, timeoutMs: limits.pushTimeoutMs })
    if (upstream !== null) session.inbox = new PushInbox(upstream, PUSH_BACKLOG)
    sessions.set(key, session)
    counters.opened++
    return { session, response: { opened: { sessionId: session.id, maxLength: session.maxLength, hiddenSize: m.spec.hiddenSize, maxStepRows: limits.maxStepRows, ...(wantsPush ? { push: true } : {}) } } }
  }

  const newSession = (id: string, key: string, client: PeerId, cache: KvCache, maxLength: number, nextStep: number): ServerSession =>
    ({ id, key, client, cache, maxLength, nextStep, inFlight: null, handoff: null, movedTo: null, told: false, pushSender: null, inbox: null })

  /** Binds a session another server handed here to its client's new stream; it continues where it was. */
  const resume = (request: InferOpen, peer: PeerId, key: string): { session: ServerSession, response: InferResponse } => {
    const m = manifest as ModelManifest
    const waiting = adopted.peek(key)
    // only the client the session was handed over for finds it: the key carries its peer id
    if (waiting === undefined) throw fail(HANDOFF_ERRORS.notAdopted, `no session ${request.sessionId} was handed to this server for this peer (or it expired)`)
    if (waiting.maxLength !== request.maxLength) throw fail(INFER_ERRORS.maxLength, `session ${request.sessionId} was opened for ${waiting.maxLength} positions, not ${request.maxLength}`)
    const previous = sessions.get(key)
    if (previous !== undefined && previous.movedTo === null) throw fail(INFER_ERRORS.sessionExists, `session ${request.sessionId} is open on another stream`)
    adopted.claim(key)
    // (a session that once moved away from here and came back replaces its old stream's record)
    const session = newSession(request.sessionId, key, peer, waiting.cache, waiting.maxLength, waiting.nextStep)
    sessions.set(key, session)
    counters.handoffs.resumed++
    logger.debug({ peer: peer.toString(), session: session.id, positions: session.cache.length }, 'handed-off session resumed')
    return {
      session,
      response: { opened: { sessionId: session.id, maxLength: session.maxLength, hiddenSize: m.spec.hiddenSize, maxStepRows: limits.maxStepRows, positions: session.cache.length, nextStep: session.nextStep } }
    }
  }

  const step = async (request: InferStep, session: ServerSession | null, signal: AbortSignal): Promise<InferResponse> => {
    if (session === null || session.id !== request.sessionId) throw fail(INFER_ERRORS.unknownSession, `no session ${request.sessionId.slice(0, 128)} on this stream`)
    let frame: Uint8Array = request.frame
    if (session.inbox !== null) {
      // a moved session says so at once rather than waiting for a push that will not come
      while (session.handoff !== null) await session.handoff
      if (session.movedTo !== null) {
        markTold(session)
        throw new SessionMovedError(session.id, session.movedTo)
      }
      // push: the input comes from the upstream server the client named, never from the client
      if (request.pushedStep == null || request.frame.byteLength > 0) throw fail(INFER_ERRORS.protocol, 'this session takes its inputs pushed by its upstream server: a step names pushed_step and carries no frame')
      if (request.pushedStep !== session.nextStep) throw fail(INFER_ERRORS.outOfOrder, `expected step ${session.nextStep}, got ${request.pushedStep}`)
      frame = await session.inbox.take(request.pushedStep, limits.pushWaitMs, signal)
    } else if (request.pushedStep != null) {
      throw fail(INFER_ERRORS.protocol, 'no upstream server was named for this session: a step carries its frame')
    }
    // a hand-off holds the session's steps until it ends, one way or the other
    while (session.handoff !== null) await session.handoff
    if (session.movedTo !== null) {
      markTold(session)
      throw new SessionMovedError(session.id, session.movedTo)
    }
    let finished = (): void => {}
    session.inFlight = new Promise((resolve) => { finished = resolve })
    try {
      const response = await runStep(frame, session)
      const sender = session.pushSender
      if (sender === null) return response
      const result = response.result as { frame: Uint8Array, computeMs: number }
      const pushed = session.nextStep - 1
      await sender.push(result.frame, pushed, signal)
      counters.pushes.sent++
      return { pushed: { step: pushed, computeMs: result.computeMs } }
    } finally {
      session.inFlight = null
      finished()
    }
  }

  const runStep = async (bytes: Uint8Array, session: ServerSession): Promise<InferResponse> => {
    const m = manifest as ModelManifest
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
      // a draining server has no room: routing skips it
      freeSessions: draining ? 0 : Math.max(0, limits.maxSessions - held()),
      msPerLayer
    }
  }

  const serve = async (stream: Stream, connection: Connection): Promise<void> => {
    const controller = new AbortController()
    streams.add(controller)
    const peer = connection.remotePeer
    const channel = new MessageChannel(INFER_PROTOCOL, stream, peer, maxMessageBytes)
    // a pushed step waits on the upstream server, not on this stream: it stops waiting once the client's stream is gone
    const gone = new AbortController()
    const onGone = (): void => { gone.abort(new SplitInferenceError('ERR_ABORTED', 'the client\'s stream closed')) }
    stream.addEventListener('close', onGone, { once: true })
    const stepSignal = AbortSignal.any([controller.signal, gone.signal])
    let session: ServerSession | null = null
    const release = (): void => {
      session?.inbox?.close()
      session?.pushSender?.close()
      if (session !== null && sessions.get(session.key) === session) sessions.delete(session.key)
      if (session !== null && session.movedTo !== null) {
        session.told = true
        clientsChanged.dispatchEvent(new Event('told'))
      }
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
            response = await step(request.step as InferStep, session, stepSignal)
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
          response = { error: { code, message: err instanceof PermagentError ? err.message.slice(0, 1024) : 'the server failed to run the step', ...(err instanceof SessionMovedError ? { movedTo: err.to.toString() } : {}) } }
        }
        await channel.send(InferResponse.encode(response), AbortSignal.any([controller.signal, AbortSignal.timeout(limits.writeTimeoutMs)]))
      }
    } catch (err) {
      logger.debug({ peer: peer.toString(), err: errorMessage(err) }, 'inference stream ended')
      channel.abort(err as Error)
    } finally {
      stream.removeEventListener('close', onGone)
      release()
      streams.delete(controller)
      await channel.close(AbortSignal.timeout(limits.writeTimeoutMs)).catch(() => {})
    }
  }

  /** Takes the pushes of one upstream server: into the inboxes of the sessions that name it. */
  const servePush = async (stream: Stream, connection: Connection): Promise<void> => {
    const channel = new MessageChannel(PUSH_PROTOCOL, stream, connection.remotePeer, maxMessageBytes + PUSH_MESSAGE_SLACK)
    const controller = new AbortController()
    streams.add(controller)
    try {
      await servePushStream(channel, {
        find: (clientPeer, sessionId) => {
          const session = sessions.get(`${clientPeer}/${sessionId}`)
          return session !== undefined && session.movedTo === null ? session.inbox : null
        },
        idleTimeoutMs: limits.idleTimeoutMs,
        writeTimeoutMs: limits.writeTimeoutMs,
        signal: controller.signal,
        logger,
        accepted: () => { counters.pushes.received++ },
        refused: (code) => {
          counters.pushes.refused++
          counters.errors[code] = (counters.errors[code] ?? 0) + 1
        }
      })
    } finally {
      streams.delete(controller)
    }
  }

  /** Takes one inbound hand-off: the checks that need this server's state, and where the session goes. */
  const serveHandoff = async (stream: Stream, connection: Connection): Promise<void> => {
    const wire = new HandoffWire(new MessageChannel(HANDOFF_PROTOCOL, stream, connection.remotePeer, HANDOFF_MAX_MESSAGE_BYTES))
    const m = manifest
    const s = stage
    if (m === null || s === null || stopping || draining) {
      await wire.sendError(fail(HANDOFF_ERRORS.draining, 'this server is not taking sessions'), AbortSignal.timeout(limits.writeTimeoutMs)).catch(() => {})
      await wire.close(AbortSignal.timeout(limits.writeTimeoutMs)).catch(() => {})
      return
    }
    await receiveHandoff(wire, connection.remotePeer, {
      manifest: m,
      span,
      maxLength: limits.maxLength,
      ioTimeoutMs: limits.writeTimeoutMs,
      handoffMs: limits.handoffTimeoutMs,
      logger,
      reserve: (offer: HandoffOffer, client: PeerId, source: PeerId) => {
        if (stopping || draining) throw fail(HANDOFF_ERRORS.draining, 'this server is draining: it takes no new sessions')
        if (!(options.acceptHandoffFrom?.(source) ?? true)) throw fail(HANDOFF_ERRORS.refused, 'this server does not take hand-offs from this peer')
        if (!(options.acceptFrom?.(client) ?? true)) throw fail(INFER_ERRORS.peerRefused, 'this server does not take sessions from the session\'s client')
        const key = `${client.toString()}/${offer.sessionId}`
        const live = sessions.get(key)
        if (live !== undefined && live.movedTo === null) throw fail(INFER_ERRORS.sessionExists, `session ${offer.sessionId} of this client is open here`)
        const holder = adopted.holder(key)
        // the same source may offer again (its first try's ack was lost): the new copy replaces the old
        if (holder !== null && (holder.state === 'reserved' || holder.from !== source.toString())) throw fail(INFER_ERRORS.sessionExists, `session ${offer.sessionId} of this client is already held here`)
        if (holder !== null) adopted.drop(key)
        if (held() >= limits.maxSessions) throw fail(INFER_ERRORS.serverFull, `this server holds ${held()} sessions, its limit`)
        adopted.reserve(key, source.toString())
        return key
      },
      unreserve: (key) => { adopted.unreserve(key) },
      newCache: () => s.newCache(),
      adopt: (key, offer, cache, source) => {
        adopted.adopt({ key, sessionId: offer.sessionId, cache, maxLength: offer.maxLength, nextStep: offer.nextStep, from: source.toString() })
        counters.handoffs.in++
      }
    }, stopped.signal)
  }

  /**
   * Waits for the session's step in flight, holds its next steps, sends it; releases it here only
   * once adopted. Null when the client closed the session before its turn came.
   */
  const handOff = async (session: ServerSession, to: PeerId, identity: UsxfSigner, signal: AbortSignal): Promise<DrainedSession | null> => {
    while (session.inFlight !== null) await session.inFlight
    if (sessions.get(session.key) !== session) return null
    let finished = (): void => {}
    session.handoff = new Promise((resolve) => { finished = resolve })
    try {
      const report = await sendSessionState({
        libp2p: options.libp2p,
        signer: identity,
        manifest: manifest as ModelManifest,
        span,
        dialMs: limits.writeTimeoutMs,
        ioTimeoutMs: limits.writeTimeoutMs,
        handoffMs: limits.handoffTimeoutMs,
        signal
      }, to, { client: session.client, sessionId: session.id, cache: session.cache, maxLength: session.maxLength, nextStep: session.nextStep })
      // the target holds it now: release ours; the client learns at its next step
      session.movedTo = to
      session.cache.clear()
      // (a client that went away meanwhile has nobody to tell; its adopted copy expires there)
      if (sessions.get(session.key) !== session) session.told = true
      counters.handoffs.out++
      return { client: session.client.toString(), sessionId: session.id, ...report }
    } finally {
      session.handoff = null
      finished()
    }
  }

  /** Resolves once every moved session's client was told (or its stream ended), or after `ms`. */
  const waitForClients = async (moved: ServerSession[], ms: number, signal: AbortSignal): Promise<number> => {
    const waiting = (): number => moved.filter((m) => !m.told).length
    if (waiting() === 0 || ms <= 0) return waiting()
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        clientsChanged.removeEventListener('told', check)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const check = (): void => { if (waiting() === 0) done() }
      const timer = setTimeout(done, ms)
      clientsChanged.addEventListener('told', check)
      signal.addEventListener('abort', done)
    })
    return waiting()
  }

  const drain = async (to: PeerId, drainOptions: DrainOptions): Promise<DrainResult> => {
    if (stage === null || stopping) throw new InvalidInputError('the layer server is not running')
    if (drainRunning) throw fail(HANDOFF_ERRORS.draining, 'a drain is already running on this server')
    if (to.equals(options.libp2p.peerId)) throw new InvalidInputError('a layer server cannot drain into itself')
    // the target checks the state's producer against this node's peer key: only that key may sign
    if (Buffer.compare(Buffer.from(drainOptions.identity.publicKey), Buffer.from(peerPublicKey(options.libp2p.peerId))) !== 0) {
      throw new InvalidInputError('drain must be signed by this node\'s identity (the key of its peer id)')
    }
    const clientWaitMs = drainOptions.clientWaitMs ?? 10_000
    if (!Number.isInteger(clientWaitMs) || clientWaitMs < 0) throw new InvalidInputError('clientWaitMs must be a non-negative integer')
    draining = true
    drainRunning = true
    try {
      return await drainInto(to, drainOptions.identity, clientWaitMs, drainOptions.signal)
    } finally {
      drainRunning = false
    }
  }

  const drainInto = async (to: PeerId, identity: UsxfSigner, clientWaitMs: number, outerSignal: AbortSignal | undefined): Promise<DrainResult> => {
    const started = performance.now()
    const signal = outerSignal !== undefined ? AbortSignal.any([outerSignal, stopped.signal]) : stopped.signal
    const result: DrainResult = { to: to.toString(), moved: [], failed: [], awaitingClients: 0, ms: 0 }
    const movedSessions: ServerSession[] = []
    let targetRefusal: { code: string, message: string } | null = null
    const live = [...sessions.values()].filter((session) => session.movedTo === null)
    logger.info({ to: to.toString(), sessions: live.length }, 'draining: handing sessions off')
    for (const session of live) {
      // a session whose client closed it meanwhile has nothing left to move
      if (sessions.get(session.key) !== session) continue
      const failed = { client: session.client.toString(), sessionId: session.id }
      if (targetRefusal !== null) { result.failed.push({ ...failed, ...targetRefusal }); continue }
      try {
        const moved = await handOff(session, to, identity, signal)
        if (moved === null) continue
        result.moved.push(moved)
        movedSessions.push(session)
      } catch (err) {
        const code = err instanceof PermagentError ? err.code : INFER_ERRORS.internal
        const message = errorMessage(err).slice(0, 1024)
        logger.warn({ to: to.toString(), session: session.id, code, err: message }, 'hand-off failed; the session stays here')
        result.failed.push({ ...failed, code, message })
        if (TARGET_WIDE.has(code) || signal.aborted) targetRefusal = { code, message }
      }
    }
    result.awaitingClients = await waitForClients(movedSessions, clientWaitMs, signal)
    result.ms = performance.now() - started
    logger.info({ to: to.toString(), moved: result.moved.length, failed: result.failed.length, awaitingClients: result.awaitingClients }, 'drained')
    return result
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
        maxInboundStreams: options.limits?.maxInboundStreams ?? limits.maxSessions + 4,
        maxInboundPushStreams: options.limits?.maxInboundPushStreams ?? limits.maxSessions + 4
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
        await options.libp2p.handle(HANDOFF_PROTOCOL, async (stream, connection) => {
          const received = serveHandoff(stream, connection)
          running.add(received)
          try { await received } finally { running.delete(received) }
        }, { maxInboundStreams: limits.maxInboundHandoffs })
        await options.libp2p.handle(PUSH_PROTOCOL, async (stream, connection) => {
          const received = servePush(stream, connection)
          running.add(received)
          try { await received } finally { running.delete(received) }
        }, { maxInboundStreams: limits.maxInboundPushStreams })
      } catch (err) {
        await options.libp2p.unhandle(INFER_PROTOCOL).catch(() => {})
        await options.libp2p.unhandle(HANDOFF_PROTOCOL).catch(() => {})
        await options.libp2p.unhandle(PUSH_PROTOCOL).catch(() => {})
        await opened.close()
        throw err
      }
      stopped = new AbortController()
      adopted = new AdoptedSessions(limits.idleTimeoutMs, (session) => {
        counters.handoffs.expired++
        logger.info({ session: session.sessionId, from: session.from }, 'an adopted session was not resumed in time; dropped')
      })
      stage = opened
      manifest = m
      logger.info({ model: m.name, span, maxLength }, 'layer server started')
    },
    async stop () {
      if (stage === null || stopping) return
      stopping = true
      try {
        await options.libp2p.unhandle(INFER_PROTOCOL)
        await options.libp2p.unhandle(HANDOFF_PROTOCOL)
        await options.libp2p.unhandle(PUSH_PROTOCOL)
        stopped.abort(new Error('the layer server stopped'))
        for (const controller of streams) controller.abort(new Error('the layer server stopped'))
        // a step or hand-off in flight finishes before its stage is released
        await Promise.allSettled([...running])
        sessions.clear()
        adopted.clear()
        await stage.close()
      } finally {
        stage = null
        stopping = false
        draining = false
      }
    },
    drain,
    stats: () => ({
      sessions: held() - adopted.size,
      opened: counters.opened,
      steps: counters.steps,
      errors: { ...counters.errors },
      msPerLayer,
      state: stage === null ? 'stopped' : draining ? 'draining' : 'serving',
      adopted: adopted.waiting,
      handoffs: { ...counters.handoffs },
      pushes: { ...counters.pushes }
    })
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
