import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import type { ModelManifest } from '../model/index.ts'
import { InferRequest } from '../pb/infer.ts'
import { PermagentError } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { HANDOFF_ERRORS } from './handoff-errors.ts'
import { hexToBytes, INFER_PROTOCOL, receiveInferResponse } from './protocol.ts'

/** A span's session moved by its server's drain and resumed on the new server, with no replay. */
export interface Handoff {
  hop: number
  from: string
  to: string
  /** Positions the session held when it was resumed (none of them replayed). */
  positions: number
}

/** The server a session moved to, from a server's ERR_SESSION_MOVED reply (InferError.moved_to), or null for any other error. */
export function sessionMovedTo (err: unknown): PeerId | null {
  if (!(err instanceof SplitInferenceError) || !err.remote || err.code !== HANDOFF_ERRORS.sessionMoved || err.movedTo === null || err.movedTo.length > 128) return null
  try {
    return peerIdFromString(err.movedTo)
  } catch {
    return null
  }
}

export interface ResumeRequest {
  libp2p: Libp2p
  peer: PeerId
  manifest: ModelManifest
  sessionId: string
  layers: { start: number, end: number }
  maxLength: number
  /** Where the client's copy of the session stands: the resumed one must continue exactly there. */
  positions: number
  nextStep: number
  maxMessageBytes: number
  timeouts: { dialMs: number, replyMs: number }
  signal: AbortSignal
}

/**
 * Opens a stream to the server a session was handed to and binds it there (`open {resume: true}`);
 * refuses a session that does not continue at the client's positions and step. Returns the
 * stream, ready for the next step; throws (and ends the stream) otherwise.
 */
export async function resumeHandedOffSession (request: ResumeRequest): Promise<MessageChannel> {
  const { libp2p, peer, manifest, timeouts, signal } = request
  const channel = await openChannel(libp2p, peer, INFER_PROTOCOL, { maxMessageBytes: request.maxMessageBytes, dialMs: timeouts.dialMs, signal })
  try {
    const open = InferRequest.encode({
      open: {
        sessionId: request.sessionId,
        configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: request.layers.start,
        layerEnd: request.layers.end,
        maxLength: request.maxLength,
        resume: true
      }
    })
    await channel.send(open, AbortSignal.any([signal, AbortSignal.timeout(timeouts.replyMs)]))
    const response = await receiveInferResponse(channel, signal, timeouts.replyMs)
    const opened = response.opened
    if (opened == null || opened.sessionId !== request.sessionId || opened.hiddenSize !== manifest.spec.hiddenSize || opened.maxLength !== request.maxLength) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not resume the session as asked')
    }
    if ((opened.positions ?? 0) !== request.positions || (opened.nextStep ?? 0) !== request.nextStep) {
      throw new SplitInferenceError(INFER_ERRORS.outOfOrder, `the resumed session holds ${opened.positions ?? 0} positions at step ${opened.nextStep ?? 0}; this client is at ${request.positions}, step ${request.nextStep}`)
    }
    if (opened.maxStepRows < request.maxLength) throw new SplitInferenceError(INFER_ERRORS.maxLength, `the server takes steps of ${opened.maxStepRows} rows; this session needs ${request.maxLength}`)
    return channel
  } catch (err) {
    channel.abort(err instanceof PermagentError ? err : new Error(String(err)))
    throw err
  }
}
