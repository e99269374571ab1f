import type { PeerId } from '@libp2p/interface'
import { RequestError, type MessageChannel } from '../mesh/index.ts'
import { InferPush, InferPushReply } from '../pb/infer.ts'
import { errorMessage, PermagentError, type Logger } from '../util/index.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { PUSH_ERRORS } from './push-errors.ts'
import type { PushInbox } from './push-inbox.ts'
import { frameStep } from './push-wire.ts'
import { validSessionId } from './protocol.ts'

export interface PushReceiveOptions {
  /** The inbox of the live session `sessionId` of client `clientPeer`, if it takes pushes. */
  find: (clientPeer: string, sessionId: string) => PushInbox | null
  idleTimeoutMs: number
  writeTimeoutMs: number
  signal: AbortSignal
  logger: Logger
  /** Counts a refusal by code (stats). */
  refused: (code: string) => void
  accepted: () => void
}

/**
 * Serves one inbound push stream: each InferPush is accepted into its session's inbox only when
 * the sender is the upstream the client named for that session, and only as the next step. A
 * refusal answers the sender alone; the session and every other stream go on serving.
 */
export async function servePushStream (channel: MessageChannel, options: PushReceiveOptions): Promise<void> {
  const from: PeerId = channel.remotePeer
  try {
    while (!options.signal.aborted) {
      let bytes: Awaited<ReturnType<MessageChannel['receive']>>
      try {
        bytes = await channel.receive({ signal: options.signal, timeoutMs: options.idleTimeoutMs, timeoutCode: 'ERR_IDLE_TIMEOUT' })
      } catch (err) {
        if (err instanceof RequestError && err.code === 'ERR_MESSAGE_TOO_LARGE') {
          options.refused(INFER_ERRORS.tensorTooLarge)
          await channel.send(InferPushReply.encode({ error: { code: INFER_ERRORS.tensorTooLarge, message: err.message } }), AbortSignal.timeout(options.writeTimeoutMs)).catch(() => {})
        }
        break
      }
      let reply: InferPushReply
      try {
        let push: InferPush
        try {
          push = InferPush.decode(bytes)
        } catch (err) {
          throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'the push is not valid protobuf', { cause: err })
        }
        if (push.clientPeer.length > 128 || !validSessionId(push.sessionId)) throw new SplitInferenceError(INFER_ERRORS.invalidMessage, 'a push names a client peer id and a valid session id')
        const inbox = options.find(push.clientPeer, push.sessionId)
        // the same answer for "no such session" and "not your session": a stranger learns nothing
        if (inbox === null || !inbox.upstream.equals(from)) throw new SplitInferenceError(PUSH_ERRORS.refused, 'no session here takes pushes from this peer')
        const step = frameStep(push.frame)
        inbox.deposit(step, push.frame)
        options.accepted()
        reply = { acceptedStep: step }
      } catch (err) {
        const code = err instanceof PermagentError ? err.code : INFER_ERRORS.internal
        if (!(err instanceof PermagentError)) options.logger.warn({ from: from.toString(), err: errorMessage(err) }, 'a push failed')
        else options.logger.debug({ from: from.toString(), code }, 'push refused')
        options.refused(code)
        reply = { error: { code, message: err instanceof PermagentError ? err.message.slice(0, 1024) : 'the server failed to take the push' } }
      }
      await channel.send(InferPushReply.encode(reply), AbortSignal.any([options.signal, AbortSignal.timeout(options.writeTimeoutMs)]))
    }
  } catch (err) {
    options.logger.debug({ from: from.toString(), err: errorMessage(err) }, 'push stream ended')
    channel.abort(err as Error)
    return
  }
  await channel.close(AbortSignal.timeout(options.writeTimeoutMs)).catch(() => {})
}
