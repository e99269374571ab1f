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
parentPort.on('message', ({ id, buffer, length }) => {
  const digest = new Uint8Array(createHash('sha256').update(new Uint8Array(buffer, 0, length)).digest())
  parentPort.postMessage({ id, digest, buffer }, [buffer])
})
`

interface Pending {
  resolve: (result: { digest: Uint8Array, buffer: ArrayBuffer }) => void
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
    created.on('message', ({ id, digest, buffer }: { id: number, digest: Uint8Array, buffer: ArrayBuffer }) => {
      const entry = pending.get(id)
      pending.delete(id)
      // an idle worker must not keep the process alive
      if (pending.size === 0) created.unref()
      entry?.resolve({ digest, buffer })
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
 * Block buffers used in turn. `acquire()` hands out the next one (waiting until its last hash has
 * brought it back); `hash(view)` hashes the first `view.byteLength` bytes of the acquired buffer,
 * on the worker when it is worth it. After `hash` the view must not be used: its memory is with
 * the worker until the digest arrives. At most `slots` blocks are in flight.
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
    const slot = this.current
    const target = view.byteLength >= WORKER_MIN_BYTES ? hashWorker() : null
    if (target === null) {
      const digest = sha256(view)
      this.buffers[slot] = Promise.resolve(view.buffer as ArrayBuffer)
      return digest
    }
    const id = nextId++
    const result = new Promise<{ digest: Uint8Array, buffer: ArrayBuffer }>((resolve, reject) => { pending.set(id, { resolve, reject }) })
    // the slot is free again when the worker hands the buffer back (a fresh one if it failed)
    this.buffers[slot] = result.then((r) => r.buffer, () => new ArrayBuffer(this.bytes))
    target.ref()
    const buffer = view.buffer as ArrayBuffer
    target.postMessage({ id, buffer, length: view.byteLength }, [buffer])
    return (await result).digest
  }
}
