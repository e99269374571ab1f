import { KvCacheMismatchError } from './errors.ts'
import type { KvCache } from './kv-cache.ts'
import type { Stage, StageInput, StageOutput } from './stage.ts'
import type { StageWorker, WorkerKvCache } from './stage-worker.ts'

/** A cache a StageRunner advances: its length, and a way to free it when the session ends. */
export interface RunnerCache {
  readonly length: number
  release: () => void
}

/**
 * What a caller needs of a stage it runs for its sessions, in this thread (Stage) or on a worker
 * (StageWorker): a caller that takes either holds caches it got from the same runner.
 */
export interface StageRunner {
  readonly maxContext: number
  newCache: () => RunnerCache
  /** `transferInput`: the caller is done with `input.hidden` (a worker may move its buffer). */
  run: (input: StageInput, cache: RunnerCache, options?: { transferInput?: boolean }) => Promise<StageOutput>
  close: () => Promise<void>
}

class InThreadCache implements RunnerCache {
  readonly cache: KvCache
  constructor (cache: KvCache) { this.cache = cache }
  get length (): number { return this.cache.length }
  release (): void {}
}

/** A Stage run on the calling thread, as a StageRunner. */
export function inThreadRunner (stage: Stage): StageRunner {
  return {
    maxContext: stage.maxContext,
    newCache: () => new InThreadCache(stage.newCache()),
    run: async (input, cache) => {
      if (!(cache instanceof InThreadCache)) throw new KvCacheMismatchError('this cache is not an in-thread stage cache')
      return await stage.run(input, cache.cache)
    },
    close: async () => { await stage.close() }
  }
}

/** A StageWorker as a StageRunner (its caches live in the worker). */
export function workerRunner (worker: StageWorker): StageRunner {
  return {
    maxContext: worker.maxContext,
    newCache: () => worker.newCache(),
    run: async (input, cache, options) => await worker.run(input, cache as WorkerKvCache, options),
    close: async () => { await worker.close() }
  }
}
