import type { GenerateResult } from '../inference/index.ts'
import type { ProviderResult, RouteReport } from './types.ts'

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
