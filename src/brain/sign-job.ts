/**
 * The shared-memory layout of one signing job (see sign-pool.ts), read the same way by the main
 * thread and the workers: two control words (the workers' claim counter, counting down from the
 * last record, and the record the main thread is at), a ready flag per record, message offsets,
 * signatures, then the domain-separated messages themselves.
 */
export interface SignJob {
  buffer: SharedArrayBuffer
  count: number
}

export const SIGNATURE_SIZE = 64
/** control[BACK]: the next record a worker claims (Atomics.sub); control[FRONT]: the main thread's record. */
export const BACK = 0
export const FRONT = 1

export function jobBytes (count: number, messageBytes: number): number {
  return 8 + 4 * count + 4 * (count + 1) + SIGNATURE_SIZE * count + messageBytes
}

export function jobViews (job: SignJob): { control: Int32Array, ready: Int32Array, offsets: Int32Array, signatures: Uint8Array, messages: Uint8Array } {
  const { buffer, count } = job
  const readyAt = 8
  const offsetsAt = readyAt + 4 * count
  const signaturesAt = offsetsAt + 4 * (count + 1)
  const messagesAt = signaturesAt + SIGNATURE_SIZE * count
  return {
    control: new Int32Array(buffer, 0, 2),
    ready: new Int32Array(buffer, readyAt, count),
    offsets: new Int32Array(buffer, offsetsAt, count + 1),
    signatures: new Uint8Array(buffer, signaturesAt, SIGNATURE_SIZE * count),
    messages: new Uint8Array(buffer, messagesAt)
  }
}
