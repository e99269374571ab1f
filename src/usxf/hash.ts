import { createHash } from 'node:crypto'
import { Worker } from 'node:worker_threads'

/**
 * SHA-256 of token blocks off the main thread, so hashing overlaps the CRC and copying there.
 * WebCrypto's digest would run on the thread pool too, but it first copies its input into fresh
 * memory, which here cost as much as hashing; a worker reading a SharedArrayBuffer copies nothing.
 * Blocks below a threshold, or not in shared memory, are hashed in place.
 */
const WORKER_MIN_BYTES = 64 * 1024

// Plain CommonJS for `eval: true`, so it runs the same from sources and from the compiled dist/.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
parentPort.on('message', ({ id, buffer, offset, length }) => {
  const digest = createHash('sha256').update(new Uint8Array(buffer, offset, length)).digest()
  parentPort.postMessage({ id, digest: new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength) })
})
`

interface Pending {
  resolve: (digest: Uint8Array) => void
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
    created.on('message', ({ id, digest }: { id: number, digest: Uint8Array }) => {
      const entry = pending.get(id)
      pending.delete(id)
      entry?.resolve(digest)
      if (pending.size === 0) created.unref()
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
 * SHA-256 of `bytes`, computed by the worker when they live in shared memory and are large enough.
 * The caller must not change those bytes until the promise settles.
 */
export async function sha256Async (bytes: Uint8Array): Promise<Uint8Array> {
  const target = bytes.byteLength >= WORKER_MIN_BYTES && bytes.buffer instanceof SharedArrayBuffer ? hashWorker() : null
  if (target === null) return sha256(bytes)
  const id = nextId++
  const result = new Promise<Uint8Array>((resolve, reject) => { pending.set(id, { resolve, reject }) })
  // a pending hash keeps the process alive only while it is pending
  target.ref()
  target.postMessage({ id, buffer: bytes.buffer, offset: bytes.byteOffset, length: bytes.byteLength })
  return await result
}

/**
 * Staging buffers in shared memory, reused in turn: slot i is handed out again only after the hash
 * started on it has finished, so at most `slots` blocks are in flight.
 */
export class StagingRing {
  private readonly buffers: Uint8Array[]
  private readonly busy: Array<Promise<unknown> | null>
  private next = 0

  constructor (bytes: number, slots = 3) {
    this.buffers = Array.from({ length: slots }, () => new Uint8Array(new SharedArrayBuffer(Math.max(bytes, 1))))
    this.busy = this.buffers.map(() => null)
  }

  /** The next free buffer (waiting for its last hash), and a function to mark it busy until `hash` settles. */
  async acquire (): Promise<{ buffer: Uint8Array, hold: (hash: Promise<unknown>) => void }> {
    const slot = this.next
    this.next = (this.next + 1) % this.buffers.length
    const previous = this.busy[slot]
    if (previous !== null) await previous.catch(() => {})
    return { buffer: this.buffers[slot], hold: (hash) => { this.busy[slot] = hash } }
  }
}
