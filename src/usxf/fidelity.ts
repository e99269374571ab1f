import { argmax, type LocalModel, type ModelSession } from '../inference/index.ts'
import type { UsxfQuantization } from './format.ts'
import { sessionPositions } from './sessions.ts'

export interface Continuation {
  /** Greedy tokens after the start token. */
  tokens: number[]
  /** Positions the session had left before the continuation (it stops there). */
  room: number
}

/**
 * Feeds `start` and then `count - 1` greedy tokens, collecting `count` greedy tokens (fewer when the
 * context runs out), then rolls the session back to where it was: caches truncated and token
 * history restored, so the check leaves no trace.
 */
export async function greedyContinuation (model: LocalModel, session: ModelSession, start: number, count: number, signal?: AbortSignal): Promise<Continuation> {
  const base = sessionPositions(session)
  const history = session.tokens.length
  const room = Math.max(0, model.maxContext - base)
  const steps = Math.min(count, room)
  const vocab = model.manifest.spec.vocabSize
  const tokens: number[] = []
  try {
    let input = start
    for (let i = 0; i < steps; i++) {
      signal?.throwIfAborted()
      const logits = await session.forward([input])
      input = argmax(logits.subarray(0, vocab))
      tokens.push(input)
    }
  } finally {
    for (const cache of session.caches) if (cache.length > base) cache.truncate(base)
    session.tokens.length = history
  }
  return { tokens, room }
}

/**
 * - exact: every requested token matched;
 * - context-exhausted: every token that both sides could produce matched, but a context ran out
 *   first (not a migration defect: the target simply has less room);
 * - lossy-divergence: a mismatch after a lossy transfer (int8, or f16 of f32 values);
 * - defect: a mismatch after an exact transfer, i.e. the migration broke the state;
 * - unchecked: no continuation was requested.
 */
export type FidelityVerdict = 'exact' | 'context-exhausted' | 'lossy-divergence' | 'defect' | 'unchecked'

export interface FidelityRecord {
  verdict: FidelityVerdict
  requested: number
  compared: number
  /** Length of the common prefix of the two continuations. */
  matching: number
  firstMismatch: number | null
  /** matching / compared (1 when nothing was compared). */
  agreement: number
  sourceRoom: number
  targetRoom: number
  /** Which side's context cut the comparison short. */
  limitedBy: 'source' | 'target' | null
  quantization: UsxfQuantization
  lossy: boolean
}

export function compareContinuations (requested: number, source: Continuation, target: Continuation, quantization: UsxfQuantization, lossy: boolean): FidelityRecord {
  const compared = Math.min(source.tokens.length, target.tokens.length, requested)
  let matching = 0
  while (matching < compared && source.tokens[matching] === target.tokens[matching]) matching++
  const firstMismatch = matching < compared ? matching : null
  const limitedBy = compared >= requested ? null : target.tokens.length <= source.tokens.length ? 'target' : 'source'
  let verdict: FidelityVerdict
  if (requested === 0) verdict = 'unchecked'
  else if (firstMismatch === null) verdict = compared === requested ? 'exact' : 'context-exhausted'
  else verdict = lossy ? 'lossy-divergence' : 'defect'
  return {
    verdict,
    requested,
    compared,
    matching,
    firstMismatch,
    agreement: compared === 0 ? 1 : matching / compared,
    sourceRoom: source.room,
    targetRoom: target.room,
    limitedBy,
    quantization,
    lossy
  }
}
