import { InvalidInputError } from '../util/index.ts'
import { loadManifest, loadTokenizer, type ChatMessage, type ModelManifest, type StageSpan, type TextTokenizer } from '../model/index.ts'
import { ContextFullError, KvCacheMismatchError, StageInputError } from './errors.ts'
import type { KvCache, KvCacheSnapshot } from './kv-cache.ts'
import { encodePrompt, runGeneration } from './generation.ts'
import type { SamplingOptions } from './sampler.ts'
import { Stage, type StageOptions } from './stage.ts'

export interface LocalModelOptions extends StageOptions {
  dataDir: string
  name: string
  /**
   * Layer indices where the model is cut: [2, 4] on 6 layers gives stages 0-2 (with the
   * embeddings), 2-4 and 4-6 (with the LM head). Default: one unsplit stage.
   */
  splits?: number[]
  /**
   * Longest prompt slice run in one pass (default 512): bounds the attention scores of a long
   * prefill ([query heads x chunk x context] per layer) without changing the result.
   */
  prefillChunk?: number
}

export interface TokenEvent {
  id: number
  /** Text this token adds to the output (may be empty while a multi-token character completes). */
  text: string
  index: number
}

export interface GenerateRequest {
  prompt?: string
  promptIds?: readonly number[]
  messages?: ChatMessage[]
  maxTokens: number
  sampling?: SamplingOptions
  /** Token ids that end generation (default: the model's eos ids). The stop token is the last id returned; it adds no text. */
  stopTokens?: readonly number[]
  onToken?: (event: TokenEvent) => void
  /** Receives the logits of every position, prompt positions included, in order. */
  onLogits?: (position: number, logits: Float32Array) => void
  signal?: AbortSignal
}

export interface GenerateResult {
  tokens: number[]
  text: string
  promptTokens: number[]
  finishReason: 'stop' | 'length' | 'context'
  prefillMs: number
  decodeMs: number
}

/** What a text generator offers, whatever runs it (local stages here; mesh and remote later). */
export interface TextGenerator {
  generate: (request: GenerateRequest) => Promise<GenerateResult>
}

/** The stages of a model run in order, with one KV cache per stage. */
export class ModelSession {
  readonly stages: readonly Stage[]
  caches: KvCache[]
  /**
   * Every token fed so far (prompt and generated), i.e. the replay history. Empty after a cache
   * import without token ids (they may be private); positions come from the caches.
   */
  readonly tokens: number[] = []
  private readonly prefillChunk: number

  constructor (stages: readonly Stage[], prefillChunk = 512) {
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new InvalidInputError('prefillChunk must be a positive integer')
    this.stages = stages
    this.caches = stages.map((s) => s.newCache())
    this.prefillChunk = prefillChunk
  }

  /** Positions held (the caches' length). */
  get length (): number {
    return this.caches[0].length
  }

  /** Copies of every stage's cache, in stage order. */
  exportCaches (): KvCacheSnapshot[] {
    return this.caches.map((cache) => cache.export())
  }

  /**
   * Replaces every stage's cache (e.g. after a migration). All snapshots must fit their stage and
   * share one length; `tokens`, when given, must have that length. Nothing changes on failure.
   */
  importCaches (snapshots: readonly KvCacheSnapshot[], tokens?: readonly number[]): void {
    if (snapshots.length !== this.caches.length) throw new KvCacheMismatchError(`${snapshots.length} snapshots for ${this.caches.length} stages`)
    const length = snapshots[0]?.length ?? 0
    if (snapshots.some((snap) => snap.length !== length)) throw new KvCacheMismatchError('snapshots of different lengths')
    if (tokens !== undefined && tokens.length !== length) throw new KvCacheMismatchError(`${tokens.length} token ids for ${length} cached positions`)
    const fresh = this.stages.map((stage, i) => {
      const cache = stage.newCache()
      cache.import(snapshots[i])
      return cache
    })
    this.caches = fresh
    this.tokens.length = 0
    if (tokens !== undefined) this.tokens.push(...tokens)
  }

  /** Feeds tokens at the next positions; returns logits [rows, vocab] (all rows or the last). */
  async forward (tokens: readonly number[], options: { allLogits?: boolean } = {}): Promise<Float32Array> {
    if (tokens.length <= this.prefillChunk) return await this.forwardPass(tokens, options)
    const parts: Float32Array[] = []
    for (let at = 0; at < tokens.length; at += this.prefillChunk) {
      const logits = await this.forwardPass(tokens.slice(at, at + this.prefillChunk), options)
      if (options.allLogits === true || at + this.prefillChunk >= tokens.length) parts.push(logits)
    }
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0))
    let offset = 0
    for (const part of parts) { out.set(part, offset); offset += part.length }
    return out
  }

  private async forwardPass (tokens: readonly number[], options: { allLogits?: boolean }): Promise<Float32Array> {
    let hidden: Float32Array | undefined
    let logits: Float32Array | undefined
    for (let i = 0; i < this.stages.length; i++) {
      const out = await this.stages[i].run(i === 0 ? { tokens, allLogits: options.allLogits } : { hidden, allLogits: options.allLogits }, this.caches[i])
      hidden = out.hidden
      logits = out.logits
    }
    this.tokens.push(...tokens)
    if (logits === undefined) throw new StageInputError('the last stage has no LM head')
    return logits
  }

  reset (): void {
    for (const cache of this.caches) cache.clear()
    this.tokens.length = 0
  }
}

/** A stored model opened for local inference, split into any stages. */
export class LocalModel implements TextGenerator {
  readonly manifest: ModelManifest
  readonly tokenizer: TextTokenizer | null
  readonly stages: readonly Stage[]

  private readonly prefillChunk: number

  private constructor (manifest: ModelManifest, tokenizer: TextTokenizer | null, stages: Stage[], prefillChunk: number) {
    this.manifest = manifest
    this.tokenizer = tokenizer
    this.stages = stages
    this.prefillChunk = prefillChunk
  }

  static async open (options: LocalModelOptions): Promise<LocalModel> {
    const manifest = await loadManifest(options.dataDir, options.name)
    const tokenizer = await loadTokenizer(options.dataDir, manifest)
    const stages: Stage[] = []
    try {
      const spans = splitSpans(manifest.spec.numLayers, options.splits ?? [])
      for (const span of spans) {
        stages.push(await Stage.open(options.dataDir, manifest, span, { ...options, spinning: options.spinning ?? (spans.length > 1 ? false : undefined) }))
      }
    } catch (err) {
      for (const stage of stages) await stage.close()
      throw err
    }
    return new LocalModel(manifest, tokenizer, stages, options.prefillChunk ?? 512)
  }

  get maxContext (): number {
    return Math.min(...this.stages.map((s) => s.maxContext))
  }

  newSession (): ModelSession {
    return new ModelSession(this.stages, this.prefillChunk)
  }

  encodePrompt (request: Pick<GenerateRequest, 'prompt' | 'promptIds' | 'messages'>): number[] {
    return encodePrompt(this, request)
  }

  async generate (request: GenerateRequest, session: ModelSession = this.newSession()): Promise<GenerateResult> {
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < 0) throw new InvalidInputError('maxTokens must be a non-negative integer')
    const promptTokens = this.encodePrompt(request)
    if (promptTokens.length === 0) throw new InvalidInputError('the prompt is empty')
    request.signal?.throwIfAborted()
    if (session.length + promptTokens.length > this.maxContext) throw new ContextFullError(session.length + promptTokens.length, this.maxContext)
    return await runGeneration(this, request, promptTokens, {
      get length () { return session.length },
      get tokens () { return session.tokens },
      forward: async (tokens, allLogits) => await session.forward(tokens, { allLogits })
    })
  }

  async close (): Promise<void> {
    for (const stage of this.stages) await stage.close()
  }
}

/** Stage spans for cut points, validated: strictly increasing, inside (0, layers). */
export function splitSpans (layers: number, splits: readonly number[]): StageSpan[] {
  const cuts = [0, ...splits, layers]
  for (let i = 1; i < cuts.length; i++) {
    if (!Number.isInteger(cuts[i]) || cuts[i] <= cuts[i - 1]) throw new InvalidInputError(`split points must be increasing integers inside 1..${layers - 1}`)
  }
  return cuts.slice(1).map((end, i) => ({ start: cuts[i], end, embed: i === 0, lmHead: end === layers }))
}
