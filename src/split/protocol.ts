import { frameBytes, type UsxfQuantization } from '../usxf/index.ts'
import { InferRequest, InferResponse } from '../pb/infer.ts'
import type { MessageChannel } from '../mesh/index.ts'
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

export function responseKind (response: InferResponse): 'opened' | 'result' | 'closed' | 'error' | 'info' | 'pushed' {
  const set = (['opened', 'result', 'closed', 'error', 'info', 'pushed'] as const).filter((k) => response[k] != null)
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

/**
 * A server's reply, decoded; an error reply is thrown as a remote SplitInferenceError with the
 * server's code (and, for ERR_SESSION_MOVED, where the session went).
 */
export function decodeInferResponse (bytes: Uint8Array | { subarray: () => Uint8Array }): InferResponse {
  let response: InferResponse
  try {
    response = InferResponse.decode(bytes instanceof Uint8Array ? bytes : bytes.subarray())
  } catch (err) {
    throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'the server reply is not valid protobuf', { cause: err })
  }
  if (responseKind(response) === 'error') {
    const error = response.error as { code: string, message: string, movedTo?: string }
    throw new SplitInferenceError(error.code !== '' ? error.code : 'ERR_REMOTE', `server replied: ${error.message}`, { remote: true, movedTo: error.movedTo })
  }
  return response
}

/** Reads one reply from the server within `replyMs` and decodes it (`decodeInferResponse`). */
export async function receiveInferResponse (channel: MessageChannel, signal: AbortSignal, replyMs: number): Promise<InferResponse> {
  return decodeInferResponse(await channel.receive({ signal, timeoutMs: replyMs, timeoutCode: 'ERR_REPLY_TIMEOUT' }))
}

/** Sends one request and returns the server's decoded reply, both within `replyMs`. */
export async function exchangeInfer (channel: MessageChannel, request: InferRequest, signal: AbortSignal, replyMs: number): Promise<InferResponse> {
  await channel.send(InferRequest.encode(request), AbortSignal.any([signal, AbortSignal.timeout(replyMs)]))
  return await receiveInferResponse(channel, signal, replyMs)
}
