import { TimeoutError } from '../util/signals.ts'

export interface WaitUntilOptions {
  /** Re-check the condition whenever one of these events fires. */
  events?: Array<{ target: EventTarget, type: string }>
  timeoutMs?: number
  /** Safety re-check for state that changes without an event (default 250 ms). */
  recheckMs?: number
  what?: string
  signal?: AbortSignal
}

/**
 * Resolves once `condition()` holds. Driven by events (connections, routing-table changes), with
 * a deadline; a slow periodic re-check covers state that changes without an event.
 */
export async function waitUntil (condition: () => boolean, options: WaitUntilOptions = {}): Promise<void> {
  if (condition()) return
  const timeoutMs = options.timeoutMs ?? 30_000
  await new Promise<void>((resolve, reject) => {
    const cleanups: Array<() => void> = []
    const finish = (err?: Error): void => {
      for (const cleanup of cleanups) cleanup()
      if (err != null) reject(err)
      else resolve()
    }
    const check = (): void => {
      try {
        if (condition()) finish()
      } catch (err) {
        finish(err as Error)
      }
    }
    for (const { target, type } of options.events ?? []) {
      target.addEventListener(type, check)
      cleanups.push(() => { target.removeEventListener(type, check) })
    }
    const timer = setTimeout(() => { finish(new TimeoutError(options.what ?? 'waiting for the swarm', timeoutMs)) }, timeoutMs)
    cleanups.push(() => { clearTimeout(timer) })
    const interval = setInterval(check, options.recheckMs ?? 250)
    cleanups.push(() => { clearInterval(interval) })
    if (options.signal != null) {
      const onAbort = (): void => { finish(new Error(`${options.what ?? 'wait'} aborted`)) }
      options.signal.addEventListener('abort', onAbort)
      cleanups.push(() => { options.signal?.removeEventListener('abort', onAbort) })
    }
  })
}
