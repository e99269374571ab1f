import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

export interface VerifyItem {
  publicKey: Uint8Array
  /** The exact signed bytes (already domain-separated). */
  message: Uint8Array
  signature: Uint8Array
}

/**
 * Ed25519 verification on worker threads, so a node catching up on a large backlog checks
 * signatures on every core while the main thread moves bytes and writes SQLite. Batches are split
 * evenly across the workers; the answer is aligned with the input.
 */
export interface VerifyPool {
  readonly threads: number
  verify: (items: VerifyItem[]) => Promise<boolean[]>
  close: () => Promise<void>
}

export function createVerifyPool (threads = Math.max(1, Math.min(4, availableParallelism()))): VerifyPool {
  // the worker is a sibling module: .ts when running from source, .js from dist
  const here = fileURLToPath(import.meta.url)
  const workerUrl = new URL(`./verify-worker${extname(here)}`, import.meta.url)
  const workers: Worker[] = []
  const pending = new Map<number, (results: Uint8Array) => void>()
  let nextId = 0
  const start = (): void => {
    if (workers.length > 0) return
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(workerUrl)
      worker.unref()
      worker.on('message', (message: { id: number, results: Uint8Array }) => {
        const resolve = pending.get(message.id)
        pending.delete(message.id)
        resolve?.(message.results)
      })
      workers.push(worker)
    }
  }
  return {
    threads,
    async verify (items) {
      if (items.length === 0) return []
      start()
      const per = Math.ceil(items.length / workers.length)
      const parts: Array<Promise<Uint8Array>> = []
      for (let w = 0; w < workers.length; w++) {
        const slice = items.slice(w * per, (w + 1) * per)
        if (slice.length === 0) continue
        const keys = new Uint8Array(slice.length * 32)
        const signatures = new Uint8Array(slice.length * 64)
        slice.forEach((item, i) => {
          if (item.publicKey.length === 32) keys.set(item.publicKey, i * 32)
          if (item.signature.length === 64) signatures.set(item.signature, i * 64)
        })
        const id = nextId++
        parts.push(new Promise((resolve) => { pending.set(id, resolve) }))
        workers[w].postMessage({ id, keys, signatures, messages: slice.map((i) => i.message) })
      }
      const results = await Promise.all(parts)
      const out: boolean[] = []
      items.forEach((item, i) => {
        // malformed keys or signatures never verify
        const ok = results[Math.floor(i / per)][i % per] === 1
        out.push(ok && item.publicKey.length === 32 && item.signature.length === 64)
      })
      return out
    },
    async close () {
      await Promise.all(workers.map(async (w) => await w.terminate()))
      workers.length = 0
      for (const resolve of pending.values()) resolve(new Uint8Array(0))
      pending.clear()
    }
  }
}
