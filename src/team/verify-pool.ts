import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ID_BYTES } from './sync/set.ts'

/** A job for a worker: shards packed end to end (`offsets` has one more entry than shards). */
export interface CheckJob {
  id: number
  packed: Uint8Array
  offsets: Uint32Array
}

/** A worker's answer: per shard 1 (decoded in full, signature valid) or 0, and the ids of the good ones. */
export interface CheckAnswer {
  id: number
  passed: Uint8Array
  ids: Uint8Array
}

/**
 * Shard checks on worker threads, so a node catching up on a large backlog decodes and verifies
 * on every core while the main thread moves bytes and writes SQLite. A worker runs the whole
 * decodeShard (schema, canonical encoding, id hash, Ed25519 signature); the main thread then
 * decodes only the structure again, trusting the worker for those checks (decodeShard's
 * checkedId). Batches are split evenly across the workers; the answer is aligned with the input.
 */
export interface VerifyPool {
  readonly threads: number
  /** Per shard: its id (hex) when it passed every check, undefined when it did not (or the pool closed). */
  checkShards: (shards: Uint8Array[]) => Promise<Array<string | undefined>>
  close: () => Promise<void>
}

/** One verification worker per core: the main thread's share of a catch-up is smaller than a worker's. */
export function createVerifyPool (threads = Math.max(1, Math.min(4, availableParallelism()))): VerifyPool {
  // the worker is a sibling module: .ts when running from source, .js from dist
  const here = fileURLToPath(import.meta.url)
  const workerUrl = new URL(`./verify-worker${extname(here)}`, import.meta.url)
  const workers: Worker[] = []
  // job id -> [worker, resolve]; a worker that dies answers its jobs with "not checked"
  const pending = new Map<number, { worker: Worker, resolve: (answer: CheckAnswer | undefined) => void }>()
  let nextId = 0
  const failWorker = (worker: Worker): void => {
    for (const [id, job] of pending) {
      if (job.worker !== worker) continue
      pending.delete(id)
      job.resolve(undefined)
    }
    const index = workers.indexOf(worker)
    if (index >= 0) workers.splice(index, 1)
  }
  const start = (): void => {
    if (workers.length > 0) return
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(workerUrl)
      worker.unref()
      worker.on('message', (message: CheckAnswer) => {
        const job = pending.get(message.id)
        pending.delete(message.id)
        job?.resolve(message)
      })
      worker.on('error', () => { failWorker(worker) })
      worker.on('exit', () => { failWorker(worker) })
      workers.push(worker)
    }
  }
  const post = async (worker: Worker, shards: Uint8Array[]): Promise<CheckAnswer | undefined> => {
    const offsets = new Uint32Array(shards.length + 1)
    for (let i = 0; i < shards.length; i++) offsets[i + 1] = offsets[i] + shards[i].byteLength
    const packed = new Uint8Array(offsets[shards.length])
    for (let i = 0; i < shards.length; i++) packed.set(shards[i], offsets[i])
    const id = nextId++
    const answer = new Promise<CheckAnswer | undefined>((resolve) => { pending.set(id, { worker, resolve }) })
    const job: CheckJob = { id, packed, offsets }
    // transferred, not copied
    worker.postMessage(job, [packed.buffer, offsets.buffer])
    return await answer
  }
  return {
    threads,
    async checkShards (shards) {
      if (shards.length === 0) return []
      start()
      if (workers.length === 0) return shards.map(() => undefined)
      const per = Math.ceil(shards.length / workers.length)
      const parts: Array<Promise<CheckAnswer | undefined>> = []
      for (let w = 0; w * per < shards.length; w++) parts.push(post(workers[w], shards.slice(w * per, (w + 1) * per)))
      const answers = await Promise.all(parts)
      const out: Array<string | undefined> = new Array(shards.length)
      for (let i = 0; i < shards.length; i++) {
        const answer = answers[Math.floor(i / per)]
        const j = i % per
        const passed = answer != null && answer.passed.length > j && answer.passed[j] === 1
        out[i] = passed ? Buffer.from(answer.ids.buffer, answer.ids.byteOffset + j * ID_BYTES, ID_BYTES).toString('hex') : undefined
      }
      return out
    },
    async close () {
      const all = [...workers]
      workers.length = 0
      for (const job of pending.values()) job.resolve(undefined)
      pending.clear()
      await Promise.all(all.map(async (w) => await w.terminate()))
    }
  }
}
