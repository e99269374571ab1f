// Worker side of the brain's signing pool (see sign-pool.ts): claims records of the current batch
// from the back, while the main thread works from the front, and signs them with the brain's key
// into shared memory. It stops where it meets the main thread.
import { parentPort, workerData } from 'node:worker_threads'
import { privateKeyObject, signRaw } from '../identity/ed25519.ts'
import { BACK, FRONT, jobViews, SIGNATURE_SIZE, type SignJob } from './sign-job.ts'

const key = privateKeyObject((workerData as { seed: Uint8Array }).seed)

parentPort?.on('message', (job: SignJob) => {
  const { control, ready, offsets, messages, signatures } = jobViews(job)
  for (;;) {
    const i = Atomics.sub(control, BACK, 1)
    if (i < 0 || i <= Atomics.load(control, FRONT)) break
    signatures.set(signRaw(key, messages.subarray(offsets[i], offsets[i + 1])), i * SIGNATURE_SIZE)
    Atomics.store(ready, i, 1)
  }
})
