// Worker side of the verification pool: decodes shards in full and checks their Ed25519
// signatures off the main thread; answers which passed, with their ids.
import { parentPort } from 'node:worker_threads'
import { decodeShard } from './shard.ts'
import { ID_BYTES } from './sync/set.ts'
import type { CheckAnswer, CheckJob } from './verify-pool.ts'

parentPort?.on('message', (job: CheckJob) => {
  const count = job.offsets.length - 1
  const passed = new Uint8Array(count)
  const ids = new Uint8Array(count * ID_BYTES)
  for (let i = 0; i < count; i++) {
    try {
      const shard = decodeShard(job.packed.subarray(job.offsets[i], job.offsets[i + 1]))
      ids.set(Buffer.from(shard.id, 'hex'), i * ID_BYTES)
      passed[i] = 1
    } catch {
      // the main thread decodes a failed shard again, to reject it with the reason
      passed[i] = 0
    }
  }
  const answer: CheckAnswer = { id: job.id, passed, ids }
  parentPort?.postMessage(answer, [passed.buffer, ids.buffer])
})
