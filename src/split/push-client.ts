import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import type { ModelManifest } from '../model/index.ts'
import { decodeActivationFrame, encodeActivationFrame, type UsxfQuantization } from '../usxf/index.ts'
import { InferRequest, InferResponse } from '../pb/infer.ts'
import { PermagentError } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { aligned, hexToBytes, INFER_PROTOCOL, receiveInferResponse } from './protocol.ts'
import { PUSH_ERRORS } from './push-errors.ts'

export interface PushChainOptions {
  libp2p: Libp2p
  manifest: ModelManifest
  quantization: UsxfQuantization
  sessionId: string
  maxLength: number
  maxMessageBytes: number
  /** The middle spans in order, and the server chosen for each. */
  spans: ReadonlyArray<{ start: number, end: number }>
  peers: readonly PeerId[]
  dialMs: number
  /** Deadline for each reply (the last hop's result covers the whole chain). */
  replyMs: number
  signal: AbortSignal
}

/** A push chain failed; `hop` is the span most likely at fault (the client rebuilds the chain without it). */
export class PushHopError extends SplitInferenceError {
  readonly hop: number
  readonly peer: PeerId

  constructor (hop: number, peer: PeerId, cause: unknown) {
    const code = cause instanceof PermagentError ? cause.code : INFER_ERRORS.internal
    super(code, `push chain: hop ${hop} (${peer.toString()}) failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause, remote: cause instanceof SplitInferenceError && cause.remote })
    this.hop = hop
    this.peer = peer
  }
}

interface PushHop {
  peer: PeerId
  channel: MessageChannel | null
  /** The acknowledgements read so far, in order (a pushing hop answers each step with `pushed`). */
  acks: Promise<void>
  /** The last step this hop acknowledged (-1 before any). */
  acked: number
}

/**
 * One generation's sessions in push mode: the client opens a session on every hop, naming each
 * hop's downstream server (push_to) and upstream server (upstream); then each step goes to the
 * first hop with its frame, to the others as `pushed_step` (no frame), and only the last hop
 * answers with activations. The intermediate hops' acknowledgements are read off the critical path.
 */
export class PushChain {
  private readonly options: PushChainOptions
  private readonly hops: PushHop[]
  private nextStep = 0
  private positions = 0

  private constructor (options: PushChainOptions, hops: PushHop[]) {
    this.options = options
    this.hops = hops
  }

  /** Opens every hop's session at once; any refusal aborts the rest and throws a PushHopError. */
  static async open (options: PushChainOptions): Promise<PushChain> {
    if (options.peers.length < 2 || options.peers.length !== options.spans.length) throw new SplitInferenceError(INFER_ERRORS.protocol, 'a push chain has two hops or more, one server each')
    const hops: PushHop[] = options.peers.map((peer) => ({ peer, channel: null, acks: Promise.resolve(), acked: -1 }))
    const chain = new PushChain(options, hops)
    const opened = await Promise.allSettled(hops.map(async (_, i) => { await chain.openHop(i) }))
    const failed = opened.findIndex((result) => result.status === 'rejected')
    if (failed >= 0) {
      const error = new PushHopError(failed, hops[failed].peer, (opened[failed] as PromiseRejectedResult).reason)
      chain.abort(error)
      throw error
    }
    return chain
  }

  private async openHop (i: number): Promise<void> {
    const { libp2p, manifest, peers, spans, sessionId, maxLength, maxMessageBytes, dialMs, signal } = this.options
    const hop = this.hops[i]
    hop.channel = await openChannel(libp2p, hop.peer, INFER_PROTOCOL, { maxMessageBytes, dialMs, signal })
    await this.send(i, {
      open: {
        sessionId,
        configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: spans[i].start,
        layerEnd: spans[i].end,
        maxLength,
        ...(i < peers.length - 1 ? { pushTo: peers[i + 1].toString() } : {}),
        ...(i > 0 ? { upstream: peers[i - 1].toString() } : {})
      }
    })
    const opened = (await this.receive(i)).opened
    if (opened == null || opened.sessionId !== sessionId || opened.hiddenSize !== manifest.spec.hiddenSize || opened.maxLength < maxLength) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not open the session as asked')
    }
    if (opened.maxStepRows < maxLength) throw new SplitInferenceError(INFER_ERRORS.maxLength, `the server takes steps of ${opened.maxStepRows} rows; this session needs ${maxLength}`)
    if (opened.push !== true) throw new SplitInferenceError(PUSH_ERRORS.unsupported, 'the server does not push (an older server): relaying instead')
  }

  /** Runs one step through the whole chain: `hidden` (the head's output) in, the last hop's output back. */
  async step (hidden: Float32Array): Promise<Float32Array> {
    const { manifest, quantization, sessionId } = this.options
    const width = manifest.spec.hiddenSize
    const rows = hidden.length / width
    const step = this.nextStep
    const positionStart = this.positions
    const last = this.hops.length - 1
    const frame = encodeActivationFrame({ step, positionStart, rows, width, values: hidden }, { quantization })
    // every hop gets its request at once: the pushed ones then wait for their input, not for the client
    const sends = this.hops.map(async (_, i) => {
      const request: InferRequest = i === 0
        ? { step: { sessionId, frame: frame as Uint8Array<ArrayBuffer> } }
        : { step: { sessionId, frame: new Uint8Array(0), pushedStep: step } }
      await this.guard(i, step, this.send(i, request))
    })
    const acks = this.hops.slice(0, last).map((hop, i) => {
      hop.acks = hop.acks.then(async () => { await this.guard(i, step, this.readAck(i, step)) })
      return hop.acks
    })
    const result = this.guard(last, step, this.readResult(step, positionStart, rows))
    const failed = new Promise<never>((_resolve, reject) => { for (const pending of [...sends, ...acks]) pending.catch(reject) })
    const output = await Promise.race([result, failed])
    this.nextStep++
    this.positions += rows
    return output
  }

  /** A failure of hop `i` at `step`, blamed on the hop most likely at fault. */
  private async guard<T> (i: number, step: number, pending: Promise<T>): Promise<T> {
    try {
      return await pending
    } catch (err) {
      if (err instanceof PushHopError) throw err
      const code = err instanceof PermagentError ? err.code : ''
      let blamed = i
      // hop i could not hand its output on: the next server is the one that went away or refused
      if (code === PUSH_ERRORS.failed && i + 1 < this.hops.length) blamed = i + 1
      // the last hop timed out: the chain stalled at the first hop that did not acknowledge the step
      if (i === this.hops.length - 1 && (code === 'ERR_REPLY_TIMEOUT' || code === PUSH_ERRORS.timeout)) {
        const stalled = this.hops.findIndex((hop, j) => j < i && hop.acked < step)
        if (stalled >= 0) blamed = stalled
      }
      throw new PushHopError(blamed, this.hops[blamed].peer, err)
    }
  }

  private async readAck (i: number, step: number): Promise<void> {
    const pushed = (await this.receive(i)).pushed
    if (pushed == null || pushed.step !== step) throw new SplitInferenceError(INFER_ERRORS.protocol, `the server did not acknowledge pushing step ${step}`)
    this.hops[i].acked = step
  }

  private async readResult (step: number, positionStart: number, rows: number): Promise<Float32Array> {
    const width = this.options.manifest.spec.hiddenSize
    const result = (await this.receive(this.hops.length - 1)).result
    if (result == null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the last server did not answer the step with a result')
    const out = decodeActivationFrame(aligned(result.frame), { width, maxRows: rows })
    if (out.step !== step || out.positionStart !== positionStart || out.rows !== rows) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, `the last server answered step ${out.step} at ${out.positionStart} (${out.rows} rows) for step ${step} at ${positionStart} (${rows} rows)`)
    }
    return out.values
  }

  private async send (i: number, request: InferRequest): Promise<void> {
    const channel = this.hops[i].channel
    if (channel === null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the push chain is closed')
    await channel.send(InferRequest.encode(request), AbortSignal.any([this.options.signal, AbortSignal.timeout(this.options.replyMs)]))
  }

  private async receive (i: number): Promise<InferResponse> {
    const channel = this.hops[i].channel
    if (channel === null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the push chain is closed')
    return await receiveInferResponse(channel, this.options.signal, this.options.replyMs)
  }

  /** Ends every hop's stream at once (a failure: the servers drop the sessions). */
  abort (err: Error): void {
    for (const hop of this.hops) {
      hop.channel?.abort(err)
      hop.channel = null
    }
  }

  /** Closes every session (best effort, bounded): the outstanding acknowledgements first. */
  async close (): Promise<void> {
    const { sessionId, replyMs } = this.options
    await Promise.allSettled(this.hops.map(async (hop) => {
      const channel = hop.channel
      if (channel === null) return
      try {
        await hop.acks
        hop.channel = null
        const signal = AbortSignal.timeout(replyMs)
        await channel.send(InferRequest.encode({ close: { sessionId } }), signal)
        await channel.receive({ signal, timeoutMs: replyMs })
        await channel.close(signal)
      } catch (err) {
        hop.channel = null
        channel.abort(err as Error)
      }
    }))
  }
}
