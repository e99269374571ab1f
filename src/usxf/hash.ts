import { createHash } from 'node:crypto'
import { Worker } from 'node:worker_threads'

/**
 * SHA-256 of token blocks on a worker thread, so hashing overlaps the CRC and copying on the main
 * thread. Block buffers are *transferred* to the worker and back (no copy): WebCrypto's digest
 * copies its input into fresh memory first, which here cost as much as the hash, and copies in and
 * out of a SharedArrayBuffer are several times slower than plain memcpy. Small blocks, or a
 * missing worker, are hashed in place.
 */
const WORKER_MIN_BYTES = 64 * 1024

// Plain CommonJS for `eval: true`, so it runs the same from sources and from the compiled dist/.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buffers, ranges }) => {
  const hash = createHash('sha256')
  for (let i = 0; i < buffers.length; i++) hash.update(new Uint8Array(buffers[i], ranges[i][0], ranges[i][1]))
  parentPort.postMessage({ id, digest: new Uint8Array(hash.digest()), buffers }, buffers)
})
`

interface Hashed {
  digest: Uint8Array
  /** The buffers, back from the worker, in the order given. */
  buffers: ArrayBuffer[]
}

interface Pending {
  resolve: (result: Hashed) => void
  reject: (err: Error) => void
}

let worker: Worker | null = null
let broken = false
let nextId = 0
const pending = new Map<number, Pending>()

function hashWorker (): Worker | null {
  if (broken) return null
  if (worker !== null) return worker
  try {
    const created = new Worker(WORKER_SOURCE, { eval: true })
    created.unref()
    created.on('message', ({ id, digest, buffers }: { id: number, digest: Uint8Array, buffers: ArrayBuffer[] }) => {
      const entry = pending.get(id)
      pending.delete(id)
      // an idle worker must not keep the process alive
      if (pending.size === 0) created.unref()
      entry?.resolve({ digest, buffers })
    })
    const fail = (err: Error): void => {
      broken = true
      worker = null
      for (const entry of pending.values()) entry.reject(err)
      pending.clear()
    }
    created.on('error', fail)
    created.on('exit', (code) => { if (pending.size > 0 || code !== 0) fail(new Error(`the hashing worker exited (${code})`)) })
    worker = created
  } catch {
    broken = true
  }
  return worker
}

export function sha256 (bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest())
}

/**
 * SHA-256 over the concatenation of `views`, on the worker when it is worth it. Each view's whole
 * ArrayBuffer is *moved* to the worker and back (the views themselves become unusable: use the
 * returned buffers), so every view must own its buffer and no two may share one.
 */
export async function hashTransferred (views: readonly Uint8Array[]): Promise<Hashed> {
  const total = views.reduce((sum, v) => sum + v.byteLength, 0)
  const target = total >= WORKER_MIN_BYTES ? hashWorker() : null
  if (target === null) {
    const hash = createHash('sha256')
    for (const view of views) hash.update(view)
    return { digest: new Uint8Array(hash.digest()), buffers: views.map((v) => v.buffer as ArrayBuffer) }
  }
  const id = nextId++
  const result = new Promise<Hashed>((resolve, reject) => { pending.set(id, { resolve, reject }) })
  const buffers = views.map((v) => v.buffer as ArrayBuffer)
  target.ref()
  target.postMessage({ id, buffers, ranges: views.map((v) => [v.byteOffset, v.byteLength]) }, buffers)
  return await result
}

/**
 * Block buffers used in turn. `acquire()` hands out the next one (waiting until its last hash has
 * brought it back); `hash(view)` hashes the first `view.byteLength` bytes of the acquired buffer.
 * After `hash` the view must not be used: its memory is with the worker until the digest arrives.
 * At most `slots` blocks are in flight.
 */
export class StagingRing {
  private readonly buffers: Array<Promise<ArrayBuffer>>
  private readonly bytes: number
  private next = 0
  private current = -1

  constructor (bytes: number, slots = 3) {
    this.bytes = Math.max(bytes, 1)
    this.buffers = Array.from({ length: slots }, () => Promise.resolve(new ArrayBuffer(this.bytes)))
  }

  async acquire (): Promise<Uint8Array> {
    this.current = this.next
    this.next = (this.next + 1) % this.buffers.length
    return new Uint8Array(await this.buffers[this.current])
  }

  /** SHA-256 of `view` (a prefix of the buffer `acquire()` just returned). */
  async hash (view: Uint8Array): Promise<Uint8Array> {
    const result = hashTransferred([view])
    // the slot is free again when the buffer is back (a fresh one if the worker failed)
    this.buffers[this.current] = result.then((r) => r.buffers[0], () => new ArrayBuffer(this.bytes))
    return (await result).digest
  }
}
