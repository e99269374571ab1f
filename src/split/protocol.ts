import { frameBytes, type UsxfQuantization } from '../usxf/index.ts'
import { InferRequest, InferResponse } from '../pb/infer.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'

export const INFER_PROTOCOL = '/permagent/infer/1.0.0'

/** Session ids: 1-128 letters, digits, ".", "_", ":" or "-". */
const SESSION_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function validSessionId (id: string): boolean {
  return SESSION_ID.test(id)
}

/** Protobuf framing around a frame: field tags, lengths and the session id (<= 128 bytes). */
const MESSAGE_SLACK = 512

/** Largest message either side sends for steps of at most `maxRows` rows of `hidden` values (f32 frames are the largest). */
export function maxInferMessageBytes (maxRows: number, hidden: number): number {
  return frameBytes(maxRows, hidden, { quantization: 'none' }) + MESSAGE_SLACK
}

export function hexToBytes (hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

export function bytesToHex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** Exactly one field of a request set, or an error. */
export function requestKind (request: InferRequest): 'open' | 'step' | 'close' | 'info' {
  const set = (['open', 'step', 'close', 'info'] as const).filter((k) => request[k] != null)
  if (set.length !== 1) throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `a request sets exactly one of open, step, close or info (${set.length} set)`)
  return set[0]
}

export function responseKind (response: InferResponse): 'opened' | 'result' | 'closed' | 'error' | 'info' {
  const set = (['opened', 'result', 'closed', 'error', 'info'] as const).filter((k) => response[k] != null)
  if (set.length !== 1) throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `a response sets exactly one field (${set.length} set)`)
  return set[0]
}

export const WIRE_QUANTIZATIONS: readonly UsxfQuantization[] = ['none', 'f16', 'int8-block']

/**
 * A frame's bytes at a 4-byte aligned offset. Protobuf decoding hands out Node Buffers at any
 * offset, and decodeActivationFrame's own realignment (`slice()`) does not copy a Buffer, so an
 * int8-block frame (f32 scales) at an unaligned offset would not decode.
 */
export function aligned (bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes)
}
