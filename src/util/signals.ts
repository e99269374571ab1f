import { PermagentError } from './errors.ts'

export class TimeoutError extends PermagentError {
  constructor (what: string, ms: number) {
    super('ERR_TIMEOUT', `${what} timed out after ${ms} ms`)
  }
}

export class AbortedError extends PermagentError {
  constructor (what: string) {
    super('ERR_ABORTED', `${what} was aborted`)
  }
}

/** A signal that aborts when any of the given signals does (undefined entries are skipped). */
export function anySignal (...signals: Array<AbortSignal | undefined>): AbortSignal {
  return AbortSignal.any(signals.filter((s): s is AbortSignal => s != null))
}

/**
 * Runs `work` with a signal that aborts after `ms` or when `parent` aborts, and turns the abort
 * into a TimeoutError or AbortedError naming `what`, so callers get a typed error for each phase.
 */
export async function abortableTimeout<T> (what: string, ms: number, parent: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeout = AbortSignal.timeout(ms)
  const signal = anySignal(timeout, parent)
  try {
    return await work(signal)
  } catch (err) {
    if (timeout.aborted) throw new TimeoutError(what, ms)
    if (parent?.aborted === true) throw new AbortedError(what)
    throw err
  }
}
