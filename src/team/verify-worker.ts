// Worker side of the verification pool: checks Ed25519 signatures off the main thread.
import { parentPort } from 'node:worker_threads'
import { verifyRaw } from '../identity/ed25519.ts'

interface Job {
  id: number
  keys: Uint8Array
  signatures: Uint8Array
  messages: Uint8Array[]
}

parentPort?.on('message', (job: Job) => {
  const results = new Uint8Array(job.messages.length)
  for (let i = 0; i < job.messages.length; i++) {
    results[i] = verifyRaw(job.keys.subarray(i * 32, i * 32 + 32), job.messages[i], job.signatures.subarray(i * 64, i * 64 + 64)) ? 1 : 0
  }
  parentPort?.postMessage({ id: job.id, results }, [results.buffer])
})
