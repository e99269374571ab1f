// Worker side of the brain's signing pool (see sign-pool.ts): claims records of the current batch
// from a shared counter and signs them with the brain's key, writing into shared memory.
import { parentPort, workerData } from 'node:worker_threads'
import { privateKeyObject, signRaw } from '../identity/ed25519.ts'
import { jobViews, type SignJob } from './sign-job.ts'

const key = privateKeyObject((workerData as { seed: Uint8Array }).seed)

parentPort?.on('message', (job: SignJob) => {
  const { control, ready, offsets, messages, signatures } = jobViews(job)
  for (;;) {
    const i = Atomics.add(control, 0, 1)
    if (i >= job.count) break
    signatures.set(signRaw(key, messages.subarray(offsets[i], offsets[i + 1])), i * 64)
    Atomics.store(ready, i, 1)
    Atomics.notify(ready, i)
  }
})
