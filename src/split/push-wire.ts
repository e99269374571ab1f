import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { FRAME_HEADER_BYTES } from '../usxf/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'

/** Server-to-server push of step outputs (docs/split-inference.md, "Push"). */
export const PUSH_PROTOCOL = '/permagent/infer/push/1.0.0'

/** Steps a push may run ahead of the client's step requests on the receiver. */
export const PUSH_BACKLOG = 2

/** Protobuf framing of an InferPush around its frame: client peer id and session id (<= 128 bytes each) and tags. */
export const PUSH_MESSAGE_SLACK = 512

/** The step number in a USXF activation frame's header (the full frame is checked when the step runs). */
export function frameStep (frame: Uint8Array): number {
  if (frame.byteLength < FRAME_HEADER_BYTES || frame[0] !== 0x55 || frame[1] !== 0x58) {
    throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'a push carries a USXF activation frame')
  }
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(8, true)
}

/** A peer id named in a message (push_to, upstream, client_peer), or a typed error. */
export function parsePeerField (value: string, field: string): PeerId {
  if (value.length > 128) throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `${field} is a peer id of at most 128 characters`)
  try {
    return peerIdFromString(value)
  } catch (err) {
    throw new SplitInferenceError(INFER_ERRORS.invalidMessage, `${field} is not a peer id`, { cause: err })
  }
}
