import { TimeoutError } from './signals.ts'

export interface WaitForOptions {
  /** Give up after this many ms (default 10 s). */
  timeoutMs?: number
  /** How often the condition is re-checked when no event prompts it (default 50 ms). */
  intervalMs?: number
  signal?: AbortSignal
  /** Names the condition in the timeout error. */
  what?: string
}

/**
 * Resolves when `condition` returns a value other than false/undefined/null. Used by tests and the
 * swarm harness to wait on state with a deadline instead of sleeping a fixed time.
 */
export async function waitFor<T> (condition: () => T | false | undefined | null | Promise<T | false | undefined | null>, options: WaitForOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const intervalMs = options.intervalMs ?? 50
  const deadline = Date.now() + timeoutMs
  for (;;) {
    options.signal?.throwIfAborted()
    const value = await condition()
    if (value !== false && value != null) return value
    if (Date.now() >= deadline) throw new TimeoutError(options.what ?? 'waiting for condition', timeoutMs)
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(1, deadline - Date.now()))))
  }
}
