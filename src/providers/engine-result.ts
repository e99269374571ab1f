import type { GenerateRequest, GenerateResult } from '../inference/index.ts'
import type { ProviderRequest, ProviderResult, RouteReport } from './types.ts'

/** What this node's engine (local, or the mesh's head and tail) is asked to generate for a provider request. */
export function engineRequest (request: ProviderRequest, signal?: AbortSignal): GenerateRequest {
  return {
    ...(request.promptIds !== undefined ? { promptIds: request.promptIds } : request.messages !== undefined ? { messages: request.messages } : { prompt: request.prompt }),
    maxTokens: request.maxTokens,
    sampling: request.sampling,
    stopTokens: request.stopTokens,
    signal,
    onToken: request.onToken !== undefined ? (e) => { request.onToken?.({ text: e.text, id: e.id }) } : undefined
  }
}

/** A provider's answer from a generation run by this node's engine (local, or the mesh's head and tail). */
export function engineResult (result: GenerateResult, route: RouteReport): ProviderResult {
  return {
    text: result.text,
    tokens: result.tokens,
    promptIds: result.promptTokens,
    promptTokens: result.promptTokens.length,
    completionTokens: result.tokens.length,
    finishReason: result.finishReason,
    prefillMs: result.prefillMs,
    decodeMs: result.decodeMs,
    route
  }
}
