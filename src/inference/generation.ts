import { InvalidInputError } from '../util/index.ts'
import type { ModelManifest, TextTokenizer } from '../model/index.ts'
import type { GenerateRequest, GenerateResult } from './local-model.ts'
import { Sampler } from './sampler.ts'

/** What the generation loop needs of a model run, wherever its layers execute (here or on peers). */
export interface ForwardRun {
  /** Positions held so far. */
  readonly length: number
  /** Tokens fed so far (the repetition penalty's history). */
  readonly tokens: readonly number[]
  /** Feeds tokens; returns logits for every fed position (allLogits) or only the last. */
  forward: (tokens: number[], allLogits: boolean) => Promise<Float32Array>
}

export interface GenerationModel {
  readonly manifest: ModelManifest
  readonly tokenizer: TextTokenizer | null
  readonly maxContext: number
}

/** Turns a prompt, prompt ids or chat messages into token ids, checked against the vocabulary. */
export function encodePrompt (model: GenerationModel, request: Pick<GenerateRequest, 'prompt' | 'promptIds' | 'messages'>): number[] {
  const given = [request.prompt, request.promptIds, request.messages].filter((x) => x !== undefined).length
  if (given !== 1) throw new InvalidInputError('give exactly one of prompt, promptIds or messages')
  if (request.promptIds !== undefined) {
    const vocab = model.manifest.spec.vocabSize
    for (const id of request.promptIds) if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new InvalidInputError(`prompt token ${id} is outside the vocabulary (${vocab})`)
    return [...request.promptIds]
  }
  if (model.tokenizer === null) throw new InvalidInputError(`model ${model.manifest.name} has no tokenizer; pass token ids`)
  const text = request.messages !== undefined ? model.tokenizer.renderChat(request.messages) : request.prompt as string
  return model.tokenizer.encode(text, { addSpecialTokens: request.messages === undefined })
}

/**
 * The prompt in one pass, then one token per pass: sampling, stop tokens, streamed text, logits
 * callbacks and the context limit. Shared by local and mesh generation so both behave the same.
 */
export async function runGeneration (model: GenerationModel, request: GenerateRequest, promptTokens: number[], run: ForwardRun): Promise<GenerateResult> {
  const sampler = new Sampler(request.sampling)
  const stop = new Set(request.stopTokens ?? model.manifest.spec.eosTokenIds)
  const wantAll = request.onLogits !== undefined
  const vocab = model.manifest.spec.vocabSize
  const startedAt = performance.now()
  const base = run.length
  const prefill = await run.forward(promptTokens, wantAll)
  if (wantAll) for (let i = 0; i < promptTokens.length; i++) request.onLogits?.(base + i, prefill.subarray(i * vocab, (i + 1) * vocab))
  let logits = prefill.subarray(prefill.length - vocab)
  const prefillMs = performance.now() - startedAt
  const tokens: number[] = []
  let text = ''
  let finishReason: GenerateResult['finishReason'] = 'length'
  while (tokens.length < request.maxTokens) {
    request.signal?.throwIfAborted()
    const next = sampler.sample(logits, run.tokens)
    tokens.push(next)
    if (stop.has(next)) {
      // Like Hugging Face generate, the stop token ends the ids; it adds no text.
      request.onToken?.({ id: next, text: '', index: tokens.length - 1 })
      finishReason = 'stop'
      break
    }
    let piece = ''
    if (model.tokenizer !== null) {
      const full = model.tokenizer.decode(tokens)
      // Hold back text while a multi-byte character is incomplete (U+FFFD at the end).
      if (!full.endsWith('\uFFFD')) {
        piece = full.slice(text.length)
        text = full
      }
    }
    request.onToken?.({ id: next, text: piece, index: tokens.length - 1 })
    if (tokens.length === request.maxTokens) break
    if (run.length + 1 > model.maxContext) { finishReason = 'context'; break }
    logits = (await run.forward([next], wantAll)).subarray(0, vocab)
    request.onLogits?.(run.length - 1, logits)
  }
  if (model.tokenizer !== null) text = model.tokenizer.decode(finishReason === 'stop' ? tokens.slice(0, -1) : tokens)
  return { tokens, text, promptTokens, finishReason, prefillMs, decodeMs: performance.now() - startedAt - prefillMs }
}
