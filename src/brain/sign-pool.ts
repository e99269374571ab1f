/**
 * Signs a bulk write's records on worker threads while the main thread stores them.
 *
 * Ed25519 signing (~35 µs a record on these machines) is the largest single cost of a batched
 * ingest, and it needs nothing but the record bytes. The main thread builds a batch's records in
 * order (ids, bytes), hands the bytes to the workers through shared memory and starts storing
 * from the first record; the workers sign from the last record down. When the main thread reaches
 * a record no worker has signed yet, it signs it itself, so it never waits for a worker: on a
 * machine with no spare core the workers simply get less done, and the batch costs what signing
 * inline does plus the copy into shared memory. Where the two meet, a record may be signed twice.
 *
 * Ed25519 signatures are deterministic (RFC 8032): whoever signs a record produces the same 64
 * bytes, so records, ids, the log and its order are exactly those of signing inline. The workers
 * get the key's seed from the identity's libp2p key, and the pool only runs when that key's
 * public half is the identity's; the first signature a worker hands back is verified too.
 */
import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { domainSeparated, verifySignature, type Identity } from '../identity/index.ts'
import type { Logger } from '../util/index.ts'
import { BACK, FRONT, jobBytes, jobViews, SIGNATURE_SIZE } from './sign-job.ts'

/** Below this many records a batch is signed inline: starting the hand-off costs more than it saves. */
export const MIN_POOLED_BATCH = 32

export interface SignItem {
  context: string
  bytes: Uint8Array
}

export interface SignBatch {
  /** Record i's signature (signed here unless a worker already has); call in ascending order. */
  signature: (i: number) => Uint8Array
}

export interface SignPool {
  readonly threads: number
  /** Starts signing `items` in the background. */
  begin: (items: SignItem[]) => SignBatch
  close: () => Promise<void>
}

/** Default worker count: every core but the one the main thread writes on, at most 3. */
export function defaultSigningThreads (): number {
  return Math.max(0, Math.min(3, availableParallelism() - 1))
}

/** The raw seed of the identity's Ed25519 key, when its libp2p key is one and matches. */
function seedOf (identity: Identity): Uint8Array | undefined {
  const key = identity.libp2pPrivateKey as { type?: string, raw?: Uint8Array }
  if (key.type !== 'Ed25519' || !(key.raw instanceof Uint8Array) || key.raw.length !== 64) return undefined
  if (Buffer.compare(Buffer.from(key.raw.subarray(32)), Buffer.from(identity.publicKey)) !== 0) return undefined
  return key.raw.slice(0, 32)
}

/** A pool of `threads` signing workers, or undefined when signing cannot leave the main thread. */
export function createSignPool (identity: Identity, threads: number, logger: Logger): SignPool | undefined {
  if (!Number.isInteger(threads) || threads < 1) return undefined
  const seed = seedOf(identity)
  if (seed === undefined) return undefined
  // the worker is a sibling module: .ts when running from source, .js from dist
  const workerUrl = new URL(`./sign-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)
  const workers: Worker[] = []
  let workerSignatureChecked = false
  let disabled = false

  const start = (): void => {
    if (workers.length > 0) return
    for (let t = 0; t < threads; t++) {
      const worker = new Worker(workerUrl, { workerData: { seed } })
      worker.unref()
      // a dead worker only slows bulk writes down: the main thread signs whatever is not ready
      worker.on('error', (err) => { logger.error({ err }, 'brain: signing worker failed') })
      workers.push(worker)
    }
  }

  const inline = (items: SignItem[]): SignBatch => ({ signature: (i) => identity.sign(items[i].context, items[i].bytes) })

  return {
    threads,
    begin (items) {
      if (disabled || items.length < MIN_POOLED_BATCH) return inline(items)
      start()
      const messages = items.map((item) => domainSeparated(item.context, item.bytes))
      const buffer = new SharedArrayBuffer(jobBytes(items.length, messages.reduce((sum, m) => sum + m.length, 0)))
      const job = { buffer, count: items.length }
      const views = jobViews(job)
      let offset = 0
      for (let i = 0; i < messages.length; i++) {
        views.offsets[i] = offset
        views.messages.set(messages[i], offset)
        offset += messages[i].length
      }
      views.offsets[messages.length] = offset
      views.control[BACK] = items.length - 1
      views.control[FRONT] = -1
      for (const worker of workers) worker.postMessage(job)

      return {
        signature (i) {
          if (disabled) return identity.sign(items[i].context, items[i].bytes)
          Atomics.store(views.control, FRONT, i)
          if (Atomics.load(views.ready, i) !== 1) return identity.sign(items[i].context, items[i].bytes)
          const signature = views.signatures.slice(i * SIGNATURE_SIZE, (i + 1) * SIGNATURE_SIZE)
          if (!workerSignatureChecked) {
            // belt and braces: the first signature from a worker must verify under the identity's key
            if (!verifySignature(identity.publicKey, items[i].context, items[i].bytes, signature)) {
              disabled = true
              logger.error('brain: a signing worker produced a signature that does not verify; signing on the main thread from now on')
              return identity.sign(items[i].context, items[i].bytes)
            }
            workerSignatureChecked = true
          }
          return signature
        }
      }
    },
    async close () {
      await Promise.all(workers.map(async (worker) => await worker.terminate()))
      workers.length = 0
    }
  }
}
