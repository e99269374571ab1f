import { randomBytes, randomInt } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { ContextFullError, encodePrompt, inThreadRunner, runGeneration, Stage, StageWorker, workerRunner, type GenerateRequest, type GenerateResult, type RunnerCache, type StageRunner, type TextGenerator } from '../inference/index.ts'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import { loadManifest, loadTokenizer, type ModelManifest, type TextTokenizer } from '../model/index.ts'
import { decodeActivationFrame, encodeActivationFrame, type UsxfQuantization } from '../usxf/index.ts'
import { InferRequest, InferResponse } from '../pb/infer.ts'
import { errorMessage, InvalidInputError, PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { aligned, exchangeInfer, hexToBytes, INFER_PROTOCOL, maxInferMessageBytes } from './protocol.ts'
import { resumeHandedOffSession, sessionMovedTo, type Handoff } from './handoff-client.ts'
import { PushChain, PushHopError } from './push-client.ts'
import { PUSH_ERRORS } from './push-errors.ts'
import { StandbySession, type StandbyWire } from './standby.ts'
import { resolveVerifyOptions, RunVerifier, VerifyConflictError, type Fault, type ResolvedVerifyOptions, type StepCheck, type VerificationReport, type VerifyOptions } from './verify.ts'

/** One middle span and the servers that can run it, in order of preference (the rest are replacements). */
export interface MeshHop {
  start: number
  end: number
  peers: PeerId[]
}

export interface MeshTimeouts {
  /** Opening a stream to a server (default 10 s). */
  dialMs: number
  /** Waiting for one reply, open or step (default 30 s): a server that stalls longer is replaced. */
  replyMs: number
}

export interface MeshModelOptions {
  libp2p: Libp2p
  dataDir: string
  /** Stored model name (the client holds its head and tail layers only). */
  name: string
  /** Layers run locally before the first server (with the embeddings), k >= 1. */
  headLayers: number
  /** Layers run locally after the last server (with the final norm and the LM head), k >= 1. */
  tailLayers: number
  /** The middle spans in order; they must tile [headLayers, layers - tailLayers). */
  chain: MeshHop[]
  /** Activations on the wire (default f16; none sends exact f32). */
  quantization?: UsxfQuantization
  maxContext?: number
  threads?: number
  timeouts?: Partial<MeshTimeouts>
  /** How long a failed server is not used again (default 60 s). A server caught answering wrongly is never used again. */
  banMs?: number
  /** Checking servers: sampled re-runs on a second server, canaries (default off; docs/split-inference.md "Verification"). */
  verify?: VerifyOptions
  /**
   * Server-to-server push (default off; docs/split-inference.md "Push"): each middle server sends
   * its output straight to the next one and only the last answers with activations. Needs two
   * middle hops or more; off while verification is on (it checks every hop's outputs here).
   */
  push?: boolean
  /**
   * Standby replacements (default off; docs/split-inference.md "Failover"): once a hop's session
   * is open, an empty session for the same span is opened on its next server and kept alive, and
   * a failure replays straight into it (no dial, negotiation or open at failure time). Costs one
   * session slot per hop on the spare for the whole generation. Relayed mode only (not push).
   */
  standby?: boolean
  /** How often a standby is pinged (`info`) so the server's idle timeout (60 s by default) does not drop it (default 20 s). */
  standbyKeepAliveMs?: number
  /**
   * Run the head and the tail on worker threads (default on; docs/split-inference.md
   * "Benchmark"): onnxruntime-node blocks the calling thread for a whole run, so in-thread
   * stages stall every other session's network work while one computes. Off: in this thread.
   */
  offload?: boolean
  logger?: Logger
}

/** How a generation used push (set when `push` was asked for). */
export interface PushReport {
  /** Steps that went server to server. */
  steps: number
  /** Why push was not used at all, if it was not. */
  disabled: 'verification' | 'single-hop' | null
  /** The step at which a failure turned the generation to client relaying (the chain rebuilt from the head's outputs). */
  fallback: { step: number, hop: number | null, code: string } | null
}

export interface Failover {
  hop: number
  from: string
  to: string
  code: string
  /** Positions replayed into the replacement. */
  replayed: number
  /** The replacement was a standby session opened before the failure (nothing dialled at failure time). */
  standby: boolean
}

export interface MeshGenerateResult extends GenerateResult {
  failovers: Failover[]
  /** Sessions a draining server handed to another, resumed there with nothing replayed (set when there were any). */
  handoffs?: Handoff[]
  /** With verification on (`verify`): servers caught answering wrongly, each excluded for the model's lifetime. */
  faults?: Fault[]
  /** With verification on: what it checked and cost, and how often the generation was run again. */
  verification?: VerificationReport & { regenerated: number }
  /** With `push` asked for: how the generation used it. */
  push?: PushReport
}

interface HopSession {
  index: number
  hop: MeshHop
  peer: PeerId | null
  channel: MessageChannel | null
  /** The session's id on `peer` (a promoted standby keeps its own id). */
  sessionId: string
  /** The replacement opened ahead on the span's next server (standby mode). */
  standby: StandbySession | null
  nextStep: number
  /** Every input this span received, in position order (what a replacement is replayed). */
  inputs: Float32Array[]
  positions: number
  /** The server a canary caught, dropped before the next step (which re-routes like a failure). */
  dropped: { peer: PeerId, error: Error } | null
}

function codeOf (err: unknown): string {
  return err instanceof PermagentError ? err.code : 'ERR_INTERNAL'
}

/**
 * Split inference: the embeddings, the first k layers, the last k layers and the LM head run
 * here; the middle spans run on layer servers. Only activation frames leave this node, never
 * token ids or text. Same `generate` as the local engine; a failing server is replaced by the
 * next one for its span, whose cache is rebuilt by replaying the span's stored inputs.
 */
export class MeshModel implements TextGenerator {
  readonly manifest: ModelManifest
  readonly tokenizer: TextTokenizer | null
  /** The embeddings and the first k layers (on a worker thread with `offload`). */
  readonly head: StageRunner
  /** The last k layers, the final norm and the LM head (on a worker thread with `offload`). */
  readonly tail: StageRunner
  readonly offload: boolean
  readonly chain: readonly MeshHop[]
  readonly quantization: UsxfQuantization
  /** Server-to-server push asked for (docs/split-inference.md "Push"). */
  readonly push: boolean
  /** Standby replacements asked for (docs/split-inference.md "Failover"). */
  readonly standby: boolean
  readonly standbyKeepAliveMs: number
  private readonly libp2p: Libp2p
  private readonly timeouts: MeshTimeouts
  private readonly banMs: number
  private readonly banned = new Map<string, number>()
  private readonly logger: Logger
  readonly verify: ResolvedVerifyOptions
  private readonly dataDir: string
  private readonly stageOptions: { maxContext?: number, threads?: number, spinning: false }
  /** The client's own stages of middle spans (referees), opened when first needed. */
  private readonly referees = new Map<string, Promise<Stage | null>>()

  private constructor (options: MeshModelOptions, manifest: ModelManifest, tokenizer: TextTokenizer | null, head: StageRunner, tail: StageRunner) {
    this.manifest = manifest
    this.tokenizer = tokenizer
    this.head = head
    this.tail = tail
    this.offload = options.offload !== false
    this.chain = options.chain.map((hop) => ({ start: hop.start, end: hop.end, peers: [...hop.peers] }))
    this.quantization = options.quantization ?? 'f16'
    this.push = options.push === true
    this.standby = options.standby === true
    this.standbyKeepAliveMs = options.standbyKeepAliveMs ?? 20_000
    this.libp2p = options.libp2p
    this.timeouts = { dialMs: 10_000, replyMs: 30_000, ...options.timeouts }
    this.banMs = options.banMs ?? 60_000
    this.logger = (options.logger ?? silentLogger()).child({ module: 'split-client' })
    this.verify = resolveVerifyOptions(options.verify)
    this.dataDir = options.dataDir
    this.stageOptions = { maxContext: options.maxContext, threads: options.threads, spinning: false }
  }

  static async open (options: MeshModelOptions): Promise<MeshModel> {
    const manifest = await loadManifest(options.dataDir, options.name)
    const layers = manifest.spec.numLayers
    const { headLayers, tailLayers } = options
    if (!Number.isInteger(headLayers) || !Number.isInteger(tailLayers) || headLayers < 1 || tailLayers < 1 || headLayers + tailLayers >= layers) {
      throw new InvalidInputError(`head and tail keep at least one layer each and leave a middle: ${headLayers} + ${tailLayers} of ${layers}`)
    }
    let at = headLayers
    for (const hop of options.chain) {
      if (hop.start !== at || !Number.isInteger(hop.end) || hop.end <= hop.start) throw new InvalidInputError(`the chain must tile layers ${headLayers}-${layers - tailLayers}; a hop starts at ${hop.start}, expected ${at}`)
      if (hop.peers.length === 0) throw new InvalidInputError(`no server for layers ${hop.start}-${hop.end}`)
      at = hop.end
    }
    if (at !== layers - tailLayers) throw new InvalidInputError(`the chain ends at layer ${at}; the tail starts at ${layers - tailLayers}`)
    const quantization = options.quantization ?? 'f16'
    if (!['none', 'f16', 'int8-block'].includes(quantization)) throw new InvalidInputError(`unknown quantization ${quantization}`)
    resolveVerifyOptions(options.verify)
    if (options.standbyKeepAliveMs !== undefined && (!Number.isFinite(options.standbyKeepAliveMs) || options.standbyKeepAliveMs < 10)) throw new InvalidInputError('standbyKeepAliveMs must be at least 10')
    const tokenizer = await loadTokenizer(options.dataDir, manifest)
    const stageOptions = { maxContext: options.maxContext, threads: options.threads, spinning: false }
    const openRunner = async (span: { start: number, end: number, embed: boolean, lmHead: boolean }): Promise<StageRunner> => options.offload !== false
      ? workerRunner(await StageWorker.open(options.dataDir, manifest, span, stageOptions))
      : inThreadRunner(await Stage.open(options.dataDir, manifest, span, stageOptions))
    const head = await openRunner({ start: 0, end: headLayers, embed: true, lmHead: false })
    let tail: StageRunner
    try {
      tail = await openRunner({ start: layers - tailLayers, end: layers, embed: false, lmHead: true })
    } catch (err) {
      await head.close()
      throw err
    }
    return new MeshModel(options, manifest, tokenizer, head, tail)
  }

  get maxContext (): number {
    return Math.min(this.head.maxContext, this.tail.maxContext)
  }

  encodePrompt (request: Pick<GenerateRequest, 'prompt' | 'promptIds' | 'messages'>): number[] {
    return encodePrompt(this, request)
  }

  /**
   * Generates like `LocalModel.generate`: the prompt in one step through the chain, then one step
   * per token. With verification on, a generation that used outputs of a server found faulty
   * afterwards is run again without it when nothing was streamed (no onToken or onLogits), so the
   * result is what honest servers give; a streaming caller gets `verification.suspectFrom`.
   */
  async generate (request: GenerateRequest): Promise<MeshGenerateResult> {
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < 0) throw new InvalidInputError('maxTokens must be a non-negative integer')
    const promptTokens = this.encodePrompt(request)
    if (promptTokens.length === 0) throw new InvalidInputError('the prompt is empty')
    if (promptTokens.length > this.maxContext) throw new ContextFullError(promptTokens.length, this.maxContext)
    const failovers: Failover[] = []
    const faults: Fault[] = []
    const streaming = request.onToken !== undefined || request.onLogits !== undefined
    for (let regenerated = 0; ; regenerated++) {
      request.signal?.throwIfAborted()
      const session = new MeshRun(this, Math.min(this.maxContext, promptTokens.length + request.maxTokens), Math.max(1, request.maxTokens), request.signal)
      try {
        const result = await this.decodeLoop(request, promptTokens, session)
        failovers.push(...result.failovers)
        const report = result.verification
        if (report === undefined) return result
        faults.push(...report.faults)
        // each run again needs a newly caught server (it is excluded from then on), so this ends
        if (report.suspectFrom === null || streaming || regenerated >= MAX_REGENERATIONS) {
          const verification = { ...report, faults, regenerated }
          this.verify.onReport?.(verification)
          return { ...result, failovers, faults, verification }
        }
        this.logger.warn({ suspectFrom: report.suspectFrom, faults: report.faults.length }, 'outputs of a faulty server were used; generating again without it')
      } finally {
        await session.close()
      }
    }
  }

  private async decodeLoop (request: GenerateRequest, promptTokens: number[], session: MeshRun): Promise<MeshGenerateResult> {
    const result = { ...await runGeneration(this, request, promptTokens, session), ...(session.handoffs.length > 0 ? { handoffs: session.handoffs } : {}), ...(session.pushReport !== null ? { push: session.pushReport } : {}) }
    const report = await session.finishVerification()
    if (report === null) return { ...result, failovers: session.failovers }
    return { ...result, failovers: session.failovers, faults: report.faults, verification: { ...report, regenerated: 0 } }
  }

  /** @internal the servers a hop may use now, primary first, banned ones skipped. */
  candidates (hop: MeshHop, exclude: Set<string>): PeerId[] {
    const now = Date.now()
    return hop.peers.filter((p) => !exclude.has(p.toString()) && (this.banned.get(p.toString()) ?? 0) <= now)
  }

  /** @internal */
  ban (peer: PeerId): void {
    const id = peer.toString()
    this.banned.set(id, Math.max(this.banned.get(id) ?? 0, Date.now() + this.banMs))
  }

  /** @internal a server caught answering wrongly: never used again by this model. */
  markFaulty (peer: PeerId): void {
    this.banned.set(peer.toString(), Infinity)
  }

  /** Servers caught answering wrongly, excluded for this model's lifetime. */
  get faultyPeers (): string[] {
    return [...this.banned].filter(([, until]) => until === Infinity).map(([id]) => id)
  }

  /** @internal the client's own stage for a middle span (a referee), or null when the store cannot open it. */
  async localStage (span: { start: number, end: number }): Promise<Stage | null> {
    const key = `${span.start}-${span.end}`
    let stage = this.referees.get(key)
    if (stage === undefined) {
      stage = Stage.open(this.dataDir, this.manifest, { start: span.start, end: span.end, embed: false, lmHead: false }, this.stageOptions).catch((err: unknown) => {
        this.logger.warn({ span, err: errorMessage(err) }, 'no local stage for this span; referees are servers only')
        return null
      })
      this.referees.set(key, stage)
    }
    return await stage
  }

  /**
   * @internal head activations of random token ids (canary inputs: no user data in them), after
   * the model's BOS like a real prompt, so the first row does not mark the session as a canary.
   */
  async randomActivations (rows: number): Promise<Float32Array> {
    const bos = this.manifest.spec.bosTokenId
    const tokens = Array.from({ length: rows }, (_, i) => i === 0 && bos !== null ? bos : randomInt(0, this.manifest.spec.vocabSize))
    const cache = this.head.newCache()
    try {
      return (await this.head.run({ tokens }, cache)).hidden as Float32Array
    } finally {
      cache.release()
    }
  }

  /** @internal */
  get wire (): { libp2p: Libp2p, timeouts: MeshTimeouts, logger: Logger } {
    return { libp2p: this.libp2p, timeouts: this.timeouts, logger: this.logger }
  }

  async close (): Promise<void> {
    await this.head.close()
    await this.tail.close()
    const referees = [...this.referees.values()]
    this.referees.clear()
    for (const stage of await Promise.all(referees)) await stage?.close()
  }
}

/** Runs again after a caught server's outputs were used (each needs another server caught). */
const MAX_REGENERATIONS = 3

/** One generation: the local caches, one server session per hop, the replay history per hop. */
class MeshRun {
  readonly tokens: number[] = []
  readonly failovers: Failover[] = []
  readonly handoffs: Handoff[] = []
  /** Set when push was asked for. */
  readonly pushReport: PushReport | null
  private readonly model: MeshModel
  // a fallback from push opens fresh sessions under a new id (the old ones may still be releasing)
  private id = randomBytes(12).toString('hex')
  private readonly headCache: RunnerCache
  private readonly tailCache: RunnerCache
  private readonly hops: HopSession[]
  private readonly maxLength: number
  private readonly controller = new AbortController()
  private readonly signal: AbortSignal
  private readonly maxMessageBytes: number
  private readonly verifier: RunVerifier | null
  /** Generation steps run so far (0 = the prompt). */
  private steps = 0
  /** Push mode: until a failure turns the generation to relaying. */
  private pushing: boolean
  private pushChain: PushChain | null = null
  /** Push mode: the head's outputs, every step (what a fallback replays the whole chain from). */
  private readonly headOutputs: Float32Array[] = []

  constructor (model: MeshModel, maxLength: number, plannedSteps: number, signal?: AbortSignal) {
    this.model = model
    this.maxLength = maxLength
    this.headCache = model.head.newCache()
    this.tailCache = model.tail.newCache()
    this.hops = model.chain.map((hop, index) => ({ index, hop, peer: null, channel: null, sessionId: this.id, standby: null, nextStep: 0, inputs: [], positions: 0, dropped: null }))
    this.signal = signal !== undefined ? AbortSignal.any([signal, this.controller.signal]) : this.controller.signal
    this.maxMessageBytes = maxInferMessageBytes(maxLength, model.manifest.spec.hiddenSize)
    this.verifier = model.verify.rate > 0 || model.verify.canaries > 0 ? this.newVerifier(plannedSteps) : null
    const disabled = this.verifier !== null ? 'verification' : this.hops.length < 2 ? 'single-hop' : null
    this.pushReport = model.push ? { steps: 0, disabled, fallback: null } : null
    this.pushing = model.push && disabled === null
  }

  private newVerifier (plannedSteps: number): RunVerifier {
    const { libp2p, timeouts, logger } = this.model.wire
    return new RunVerifier({
      wire: { libp2p, manifest: this.model.manifest, quantization: this.model.quantization, maxLength: this.maxLength, maxMessageBytes: this.maxMessageBytes, dialMs: timeouts.dialMs, replyMs: timeouts.replyMs, signal: this.signal },
      logger,
      options: this.model.verify,
      candidates: (hop, exclude) => this.model.candidates(this.hops[hop].hop, exclude),
      ban: (peer) => { this.model.ban(peer) },
      markFaulty: (peer) => { this.model.markFaulty(peer) },
      localStage: async (span) => await this.model.localStage(span),
      randomActivations: async (rows) => await this.model.randomActivations(rows),
      dropPrimary: (index, peer, error) => {
        const hop = this.hops[index]
        if (hop.peer === null || !hop.peer.equals(peer)) return
        hop.channel?.abort(error)
        hop.channel = null
        hop.nextStep = 0
        hop.dropped = { peer, error }
      },
      plannedSteps
    }, this.hops.map((hop) => ({ index: hop.index, start: hop.hop.start, end: hop.hop.end, inputs: hop.inputs, primary: () => hop.channel !== null ? hop.peer : null })))
  }

  /** Checks what the last steps left unchecked; the report of this run (null without verification). */
  async finishVerification (): Promise<VerificationReport | null> {
    if (this.verifier === null) return null
    await this.verifier.finish(this.steps)
    return this.verifier.report()
  }

  get length (): number {
    return this.headCache.length
  }

  async forward (tokens: readonly number[], allLogits: boolean): Promise<Float32Array> {
    await this.verifier?.beforeStep(this.steps)
    let hidden = (await this.model.head.run({ tokens }, this.headCache)).hidden as Float32Array
    if (this.pushing) hidden = await this.pushStep(hidden)
    else for (const hop of this.hops) hidden = await this.runHop(hop, hidden)
    // the last hop's output is not kept unless a verifier holds it: the worker may take its buffer
    const out = await this.model.tail.run({ hidden, allLogits }, this.tailCache, { transferInput: this.verifier === null })
    this.tokens.push(...tokens)
    this.steps++
    return out.logits as Float32Array
  }

  private async runHop (hop: HopSession, hidden: Float32Array): Promise<Float32Array> {
    const tried = new Set<string>()
    let lastError: unknown = hop.dropped?.error
    // the server that failed first on this step (later ones may fail while replacing it)
    let failed: PeerId | null = hop.dropped?.peer ?? null
    hop.dropped = null
    // a sampled step: the verifier's catch-up runs while the primary computes
    const check: StepCheck | null = this.verifier?.begin(hop.index, hidden) ?? null
    let viaStandby = false
    for (;;) {
      this.signal.throwIfAborted()
      let replayed = 0
      try {
        if (hop.channel === null && await this.promoteStandby(hop, tried)) {
          viaStandby = true
          if (lastError !== undefined) replayed = hop.positions
        }
        if (hop.channel === null) {
          const peer = this.model.candidates(hop.hop, tried)[0]
          if (peer === undefined) break
          tried.add(peer.toString())
          viaStandby = false
          await this.openHop(hop, peer)
          if (lastError !== undefined) replayed = hop.positions
        }
        let output: Float32Array
        if (hop.nextStep === 0 && hop.positions > 0) {
          // a replacement: rebuild its cache from every input this span has seen, then this step
          const rows = this.concat([...hop.inputs, hidden])
          const all = await this.step(hop, rows, 0)
          output = all.subarray(all.length - hidden.length)
        } else {
          output = await this.step(hop, hidden, hop.positions)
        }
        await this.verifier?.settle(hop.index, hidden, hop.positions, output, hop.peer as PeerId, check, this.steps)
        if (lastError !== undefined && failed !== null) {
          this.failovers.push({ hop: hop.index, from: failed.toString(), to: (hop.peer as PeerId).toString(), code: codeOf(lastError), replayed, standby: viaStandby })
        }
        hop.inputs.push(hidden)
        hop.positions += hidden.length / this.model.manifest.spec.hiddenSize
        this.ensureStandby(hop)
        return output
      } catch (err) {
        if (this.signal.aborted || err instanceof VerifyConflictError) throw err
        // a draining server handed this span's session to another: bind it there and retry the step,
        // nothing replayed; if that fails, fall through to the replay below
        const movedTo = hop.channel !== null && hop.peer !== null ? sessionMovedTo(err) : null
        if (movedTo !== null) {
          const from = hop.peer as PeerId
          const { libp2p, timeouts, logger } = this.model.wire
          hop.channel?.close(AbortSignal.timeout(timeouts.replyMs)).catch(() => {})
          hop.channel = null
          try {
            hop.channel = await resumeHandedOffSession({ libp2p, peer: movedTo, manifest: this.model.manifest, sessionId: hop.sessionId, layers: hop.hop, maxLength: this.maxLength, positions: hop.positions, nextStep: hop.nextStep, maxMessageBytes: this.maxMessageBytes, timeouts, signal: this.signal })
            hop.peer = movedTo
            this.model.ban(from)
            this.handoffs.push({ hop: hop.index, from: from.toString(), to: movedTo.toString(), positions: hop.positions })
            continue
          } catch (resumeError) {
            logger.warn({ hop: hop.index, peer: movedTo.toString(), code: codeOf(resumeError), err: errorMessage(resumeError) }, 'could not resume a handed-off session; replaying its span')
          }
        }
        lastError = err
        const peer = hop.peer
        failed ??= peer
        this.model.wire.logger.warn({ hop: hop.index, peer: peer?.toString(), code: codeOf(err), err: errorMessage(err) }, 'layer server failed; re-routing its span')
        if (peer !== null) { this.model.ban(peer); tried.add(peer.toString()) }
        hop.channel?.abort(err as Error)
        hop.channel = null
        hop.nextStep = 0
      }
    }
    throw new SplitInferenceError(INFER_ERRORS.noRoute, `no server left for layers ${hop.hop.start}-${hop.hop.end}: ${errorMessage(lastError)}`, { cause: lastError })
  }

  /** One step server to server; on any failure, the rest of the generation is relayed. */
  private async pushStep (hidden: Float32Array): Promise<Float32Array> {
    try {
      if (this.pushChain === null) {
        const peers = this.hops.map((hop) => this.model.candidates(hop.hop, new Set())[0])
        if (peers.some((peer) => peer === undefined)) throw new SplitInferenceError(INFER_ERRORS.noRoute, 'a span has no server left to push to')
        const { libp2p, timeouts } = this.model.wire
        this.pushChain = await PushChain.open({
          libp2p,
          manifest: this.model.manifest,
          quantization: this.model.quantization,
          sessionId: this.id,
          maxLength: this.maxLength,
          maxMessageBytes: this.maxMessageBytes,
          spans: this.hops.map((hop) => hop.hop),
          peers,
          dialMs: timeouts.dialMs,
          replyMs: timeouts.replyMs,
          signal: this.signal
        })
      }
      const output = await this.pushChain.step(hidden)
      this.headOutputs.push(hidden)
      if (this.pushReport !== null) this.pushReport.steps++
      return output
    } catch (err) {
      if (this.signal.aborted) throw err
      return await this.fallBackFromPush(err, hidden)
    }
  }

  /**
   * Push failed: the client never saw the middle hops' inputs, so it rebuilds the whole chain in
   * relayed mode from the head's stored outputs (fresh sessions, the failed server banned), this
   * step included. Every hop's cache is then recomputed from the same inputs an uninterrupted run
   * gave it, and the generation goes on relayed, with the usual per-hop failover.
   */
  private async fallBackFromPush (err: unknown, hidden: Float32Array): Promise<Float32Array> {
    const { logger } = this.model.wire
    this.pushing = false
    this.pushChain?.abort(err instanceof Error ? err : new Error(String(err)))
    this.pushChain = null
    const blamed = err instanceof PushHopError ? err : null
    const code = codeOf(err)
    // a server that does not push is fine for relaying; any other failure bans the hop's server,
    // unless it is the span's only one (the blame is a best guess: the rebuild then tries it again)
    if (blamed !== null && code !== PUSH_ERRORS.unsupported && this.model.candidates(this.hops[blamed.hop].hop, new Set([blamed.peer.toString()])).length > 0) {
      this.model.ban(blamed.peer)
    }
    const past = this.headOutputs.splice(0)
    const replayed = past.reduce((n, rows) => n + rows.length, 0) / this.model.manifest.spec.hiddenSize
    logger.warn({ hop: blamed?.hop, peer: blamed?.peer.toString(), code, err: errorMessage(err), replayed }, 'push chain failed; relaying from here, the chain rebuilt from the head outputs')
    if (this.pushReport !== null) this.pushReport.fallback = { step: this.steps, hop: blamed?.hop ?? null, code }
    this.id = randomBytes(12).toString('hex')
    for (const hop of this.hops) {
      hop.channel = null
      hop.sessionId = this.id
      hop.peer = null
      hop.nextStep = 0
      hop.inputs = []
      hop.positions = 0
    }
    let rows = this.concat([...past, hidden])
    for (const hop of this.hops) rows = await this.runHop(hop, rows)
    const replacement = blamed !== null ? this.hops[blamed.hop].peer : null
    if (blamed !== null && replacement !== null && !replacement.equals(blamed.peer)) {
      this.failovers.push({ hop: blamed.hop, from: blamed.peer.toString(), to: replacement.toString(), code, replayed, standby: false })
    }
    return rows.subarray(rows.length - hidden.length)
  }

  private concat (parts: Float32Array[]): Float32Array {
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
    let at = 0
    for (const p of parts) { out.set(p, at); at += p.length }
    return out
  }

  private async exchange (hop: HopSession, request: InferRequest): Promise<InferResponse> {
    return await this.exchangeOn(hop.channel as MessageChannel, this.signal, request)
  }

  private async exchangeOn (channel: MessageChannel, signal: AbortSignal, request: InferRequest): Promise<InferResponse> {
    return await exchangeInfer(channel, request, signal, this.model.wire.timeouts.replyMs)
  }

  private async openHop (hop: HopSession, peer: PeerId): Promise<void> {
    hop.peer = peer
    hop.channel = null
    hop.sessionId = this.id
    hop.nextStep = 0
    hop.channel = await this.openSession(hop.hop, peer, hop.sessionId, this.signal)
  }

  /** Dials `peer`, negotiates the protocol and opens an empty session for `span`: the open channel. */
  private async openSession (span: MeshHop, peer: PeerId, sessionId: string, signal: AbortSignal): Promise<MessageChannel> {
    const { libp2p, timeouts } = this.model.wire
    const channel = await openChannel(libp2p, peer, INFER_PROTOCOL, { maxMessageBytes: this.maxMessageBytes, dialMs: timeouts.dialMs, signal })
    try {
      await this.openOn(channel, span, sessionId, signal)
    } catch (err) {
      channel.abort(err as Error)
      throw err
    }
    return channel
  }

  private async openOn (channel: MessageChannel, span: MeshHop, sessionId: string, signal: AbortSignal): Promise<void> {
    const manifest = this.model.manifest
    const response = await this.exchangeOn(channel, signal, {
      open: {
        sessionId,
        configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: span.start,
        layerEnd: span.end,
        maxLength: this.maxLength
      }
    })
    const opened = response.opened
    if (opened == null || opened.sessionId !== sessionId || opened.hiddenSize !== manifest.spec.hiddenSize || opened.maxLength < this.maxLength) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not open the session as asked')
    }
    if (opened.maxStepRows < this.maxLength) throw new SplitInferenceError(INFER_ERRORS.maxLength, `the server takes steps of ${opened.maxStepRows} rows; this session needs ${this.maxLength}`)
  }

  private async step (hop: HopSession, hidden: Float32Array, positionStart: number): Promise<Float32Array> {
    const width = this.model.manifest.spec.hiddenSize
    const rows = hidden.length / width
    const frame = encodeActivationFrame({ step: hop.nextStep, positionStart, rows, width, values: hidden }, { quantization: this.model.quantization })
    const response = await this.exchange(hop, { step: { sessionId: hop.sessionId, frame: frame as Uint8Array<ArrayBuffer> } })
    if (response.result == null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not answer the step with a result')
    const out = decodeActivationFrame(aligned(response.result.frame), { width, maxRows: rows })
    if (out.step !== hop.nextStep || out.positionStart !== positionStart || out.rows !== rows) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, `the server answered step ${out.step} at ${out.positionStart} (${out.rows} rows) for step ${hop.nextStep} at ${positionStart} (${rows} rows)`)
    }
    hop.nextStep++
    return out.values
  }

  /**
   * Standby mode: the hop's standby, if it opened and is alive and its server is still allowed,
   * becomes the hop's session (the caller replays into it). False when there is none to take.
   */
  private async promoteStandby (hop: HopSession, tried: Set<string>): Promise<boolean> {
    const standby = hop.standby
    if (standby === null) return false
    hop.standby = null
    const allowed = !tried.has(standby.peer.toString()) && this.model.candidates(hop.hop, tried).some((p) => p.equals(standby.peer))
    const channel = allowed ? await standby.take() : null
    if (channel === null) {
      void standby.close()
      return false
    }
    tried.add(standby.peer.toString())
    hop.peer = standby.peer
    hop.sessionId = standby.sessionId
    hop.channel = channel
    hop.nextStep = 0
    return true
  }

  /** Standby mode: opens a standby on the span's next server once the hop has a working session. */
  private ensureStandby (hop: HopSession): void {
    if (!this.model.standby || this.pushing || hop.peer === null) return
    const primary = hop.peer
    // a hand-off can move the session onto the standby's server: a standby there protects nothing
    if (hop.standby !== null && hop.standby.peer.equals(primary)) {
      void hop.standby.close()
      hop.standby = null
    }
    if (hop.standby !== null) return
    const peer = this.model.candidates(hop.hop, new Set([primary.toString()]))[0]
    if (peer === undefined) return
    hop.standby = new StandbySession({ peer, sessionId: randomBytes(12).toString('hex'), wire: this.standbyWire(hop.hop), keepAliveMs: this.model.standbyKeepAliveMs, signal: this.signal, logger: this.model.wire.logger })
  }

  private standbyWire (span: MeshHop): StandbyWire {
    return {
      open: async (peer, sessionId, signal) => await this.openSession(span, peer, sessionId, signal),
      ping: async (channel, signal) => {
        const response = await this.exchangeOn(channel, signal, { info: {} })
        if (response.info == null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not answer info')
      },
      close: async (channel, sessionId) => { await this.closeSession(channel, sessionId) }
    }
  }

  private async closeSession (channel: MessageChannel, sessionId: string): Promise<void> {
    try {
      const signal = AbortSignal.timeout(this.model.wire.timeouts.replyMs)
      await channel.send(InferRequest.encode({ close: { sessionId } }), signal)
      await channel.receive({ signal, timeoutMs: this.model.wire.timeouts.replyMs })
      await channel.close(signal)
    } catch (err) {
      channel.abort(err as Error)
    }
  }

  /** Closes every server session, standbys too (best effort, bounded) and ends the streams. */
  async close (): Promise<void> {
    await this.verifier?.close()
    const chain = this.pushChain
    this.pushChain = null
    await chain?.close()
    await Promise.allSettled(this.hops.map(async (hop) => {
      const standby = hop.standby
      hop.standby = null
      const channel = hop.channel
      hop.channel = null
      await Promise.all([standby?.close(), channel !== null ? this.closeSession(channel, hop.sessionId) : undefined])
    }))
    this.headCache.release()
    this.tailCache.release()
    this.controller.abort(new Error('the generation ended'))
  }
}
