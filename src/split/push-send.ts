import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import { InferPush, InferPushReply } from '../pb/infer.ts'
import { errorMessage, PermagentError } from '../util/index.ts'
import { SplitInferenceError } from './errors.ts'
import { PUSH_ERRORS } from './push-errors.ts'
import { PUSH_PROTOCOL } from './push-wire.ts'

export interface PushSenderOptions {
  libp2p: Libp2p
  /** The next hop's server, named by the client. */
  to: PeerId
  /** The session it pushes for: the receiver finds it by client and id. */
  client: PeerId
  sessionId: string
  maxMessageBytes: number
  /** Deadline for one push: dial (the first time), send and the receiver's accept. */
  timeoutMs: number
}

/**
 * One session's outbound push leg: a stream to the next hop's server, opened at the first push and
 * kept for the session. Each push waits for the receiver's accept; any failure ends the stream
 * and throws ERR_PUSH_FAILED (the client then falls back to relaying).
 */
export class PushSender {
  private readonly options: PushSenderOptions
  private channel: MessageChannel | null = null

  constructor (options: PushSenderOptions) {
    this.options = options
  }

  async push (frame: Uint8Array, step: number, signal: AbortSignal): Promise<void> {
    const { libp2p, to, client, sessionId, maxMessageBytes, timeoutMs } = this.options
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
    try {
      this.channel ??= await openChannel(libp2p, to, PUSH_PROTOCOL, { maxMessageBytes, dialMs: timeoutMs, signal })
      await this.channel.send(InferPush.encode({ clientPeer: client.toString(), sessionId, frame: frame as Uint8Array<ArrayBuffer> }), deadline)
      const bytes = await this.channel.receive({ signal, timeoutMs, timeoutCode: PUSH_ERRORS.timeout })
      let reply: InferPushReply
      try {
        reply = InferPushReply.decode(bytes)
      } catch (err) {
        throw new SplitInferenceError('ERR_INVALID_MESSAGE', 'the push reply is not valid protobuf', { cause: err })
      }
      if (reply.error != null) throw new SplitInferenceError(reply.error.code !== '' ? reply.error.code : 'ERR_REMOTE', reply.error.message, { remote: true })
      if (reply.acceptedStep !== step) throw new SplitInferenceError('ERR_INFER_PROTOCOL', `the next server accepted step ${reply.acceptedStep} for step ${step}`)
    } catch (err) {
      this.channel?.abort(err as Error)
      this.channel = null
      const code = err instanceof PermagentError ? err.code : 'ERR_INTERNAL'
      throw new SplitInferenceError(PUSH_ERRORS.failed, `push of step ${step} to ${to.toString()} failed: ${code}: ${errorMessage(err).slice(0, 512)}`, { cause: err })
    }
  }

  /** Ends the leg (the session closed). */
  close (): void {
    const channel = this.channel
    this.channel = null
    if (channel !== null) channel.close(AbortSignal.timeout(this.options.timeoutMs)).catch(() => {})
  }
}
