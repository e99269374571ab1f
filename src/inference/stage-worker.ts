import { Worker } from 'node:worker_threads'
import type { ModelManifest, StageSpan } from '../model/index.ts'
import { KvCacheMismatchError, StageInputError } from './errors.ts'
import type { StageInput, StageOptions, StageOutput } from './stage.ts'
import { errorFromWire, movable, type StageWorkerData, type StageWorkerReply, type StageWorkerRequest } from './stage-worker-wire.ts'

/** A KV cache held in a stage worker's thread: this side knows only its id and length. */
export class WorkerKvCache {
  readonly layerStart: number
  readonly layerEnd: number
  readonly id: number
  private readonly owner: StageWorker
  private positions = 0
  private released = false

  /** @internal made by StageWorker.newCache */
  constructor (owner: StageWorker, id: number) {
    this.owner = owner
    this.id = id
    this.layerStart = owner.span.start
    this.layerEnd = owner.span.end
  }

  /** Number of positions cached. */
  get length (): number {
    return this.positions
  }

  /** @internal */
  advance (length: number): void {
    this.positions = length
  }

  /** @internal */
  belongsTo (worker: StageWorker): boolean {
    return this.owner === worker && !this.released
  }

  /** Frees the cache in the worker (a released cache cannot run again). */
  release (): void {
    if (this.released) return
    this.released = true
    this.owner.drop(this)
  }
}

interface Pending {
  cache: WorkerKvCache
  resolve: (output: StageOutput) => void
  reject: (err: Error) => void
}

/**
 * A Stage run on its own worker thread: the same `run(input, cache)` and `newCache()`, with the
 * caches held in the worker. onnxruntime-node runs a session synchronously on the calling
 * thread, so a Stage blocks its event loop for the whole run; a StageWorker leaves the caller's
 * loop free (network, other sessions) while it computes. Runs on one worker are serialised in
 * arrival order. Outputs are moved (transferred), not copied; an input's buffer is moved only
 * when the caller says it is done with it (`transferInput`). Results are bit-identical to a
 * Stage with the same options: the same graph and session options run in the worker.
 */
export class StageWorker {
  readonly manifest: ModelManifest
  readonly span: StageSpan
  readonly maxContext: number
  private readonly worker: Worker
  private readonly pending = new Map<number, Pending>()
  private nextRun = 1
  private nextCache = 1
  private failure: Error | null = null

  private constructor (manifest: ModelManifest, span: StageSpan, maxContext: number, worker: Worker) {
    this.manifest = manifest
    this.span = span
    this.maxContext = maxContext
    this.worker = worker
    worker.on('message', (reply: StageWorkerReply) => { this.settle(reply) })
    worker.on('error', (err) => { this.fail(err) })
    worker.on('exit', (code) => { this.fail(new Error(`the stage worker exited (code ${code})`)) })
  }

  /** Opens the stage in a new worker thread (same arguments as Stage.open). */
  static async open (dataDir: string, manifest: ModelManifest, span: StageSpan, options: StageOptions = {}): Promise<StageWorker> {
    const data: StageWorkerData = { kind: 'permagent-stage-worker', dataDir, manifest, span, options }
    // the entry is a sibling module: .ts when run from source, .js once built into dist/
    const entry = new URL(import.meta.url.endsWith('.ts') ? './stage-worker-thread.ts' : './stage-worker-thread.js', import.meta.url)
    const worker = new Worker(entry, { workerData: data })
    let ready: StageWorkerReply
    let onMessage = (_reply: StageWorkerReply): void => {}
    let onError = (_err: Error): void => {}
    let onExit = (_code: number): void => {}
    try {
      ready = await new Promise<StageWorkerReply>((resolve, reject) => {
        onMessage = resolve
        onError = reject
        onExit = (code) => { reject(new Error(`the stage worker exited (code ${code}) before it was ready`)) }
        worker.once('message', onMessage)
        worker.once('error', onError)
        worker.once('exit', onExit)
      })
    } catch (err) {
      await worker.terminate()
      throw err
    } finally {
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
    }
    if (ready.type !== 'ready') {
      await worker.terminate()
      throw ready.type === 'failed' ? errorFromWire(ready.error) : new Error(`the stage worker answered ${ready.type} at start`)
    }
    return new StageWorker(manifest, span, ready.maxContext, worker)
  }

  get layers (): number {
    return this.span.end - this.span.start
  }

  newCache (): WorkerKvCache {
    return new WorkerKvCache(this, this.nextCache++)
  }

  /**
   * Runs inputs at the next positions of `cache` and advances it, like Stage.run. With
   * `transferInput`, `input.hidden`'s buffer moves to the worker (the caller's array is emptied).
   */
  async run (input: StageInput, cache: WorkerKvCache, options: { transferInput?: boolean } = {}): Promise<StageOutput> {
    if (this.failure !== null) throw this.failure
    if (!cache.belongsTo(this)) throw new KvCacheMismatchError('this cache belongs to another stage worker, or was released')
    if (input.hidden !== undefined && !(input.hidden instanceof Float32Array)) throw new StageInputError('hidden states must be a Float32Array')
    const id = this.nextRun++
    const request: StageWorkerRequest = { type: 'run', id, cache: cache.id, input }
    return await new Promise<StageOutput>((resolve, reject) => {
      this.pending.set(id, { cache, resolve, reject })
      this.worker.postMessage(request, options.transferInput === true ? movable(input.hidden) : [])
    })
  }

  /** @internal */
  drop (cache: WorkerKvCache): void {
    if (this.failure === null) this.worker.postMessage({ type: 'drop', cache: cache.id } satisfies StageWorkerRequest)
  }

  /** Ends the worker thread; runs still waiting fail. */
  async close (): Promise<void> {
    this.fail(new Error('the stage worker is closed'))
    await this.worker.terminate()
  }

  private settle (reply: StageWorkerReply): void {
    if (reply.type !== 'ran' && reply.type !== 'error') return
    const pending = this.pending.get(reply.id)
    if (pending === undefined) return
    this.pending.delete(reply.id)
    if (reply.type === 'error') {
      pending.reject(errorFromWire(reply.error))
      return
    }
    pending.cache.advance(reply.length)
    pending.resolve(reply.output)
  }

  private fail (err: Error): void {
    this.failure ??= err
    for (const pending of this.pending.values()) pending.reject(this.failure)
    this.pending.clear()
  }
}
