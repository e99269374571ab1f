import type { PeerId } from '@libp2p/interface'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { PUSH_ERRORS } from './push-errors.ts'

/**
 * The pushed inputs of one session on its downstream server: frames its named upstream pushed,
 * by step, until the client's matching step request takes them. Bounded (a push runs at most
 * `capacity` steps ahead of the steps the client asked for) and strictly in step order.
 */
export class PushInbox {
  /** The only peer whose pushes this session takes (named by the client at open). */
  readonly upstream: PeerId
  private readonly capacity: number
  private readonly frames = new Map<number, Uint8Array>()
  private readonly changed = new EventTarget()
  private nextPush = 0
  private closed: Error | null = null

  constructor (upstream: PeerId, capacity: number) {
    this.upstream = upstream
    this.capacity = capacity
  }

  /** Takes the upstream's output for `step`: the next step in order, within the backlog. */
  deposit (step: number, frame: Uint8Array): void {
    if (this.closed !== null) throw new SplitInferenceError(PUSH_ERRORS.refused, 'no session here takes pushes from this peer')
    if (step !== this.nextPush) throw new SplitInferenceError(INFER_ERRORS.outOfOrder, `expected a push of step ${this.nextPush}, got ${step}`)
    if (this.frames.size >= this.capacity) throw new SplitInferenceError(PUSH_ERRORS.backlog, `this session holds ${this.frames.size} pushed steps the client has not asked for yet`)
    // a copy: aligned for the frame decoder, and not a view into the stream's read buffer
    this.frames.set(step, new Uint8Array(frame))
    this.nextPush++
    this.changed.dispatchEvent(new Event('change'))
  }

  /** The pushed input of `step`, waiting for it up to `timeoutMs`. */
  async take (step: number, timeoutMs: number, signal: AbortSignal): Promise<Uint8Array> {
    const ready = (): Uint8Array | null => {
      if (this.closed !== null) throw this.closed
      const frame = this.frames.get(step)
      if (frame === undefined) return null
      this.frames.delete(step)
      return frame
    }
    const now = ready()
    if (now !== null) return now
    return await new Promise<Uint8Array>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        this.changed.removeEventListener('change', check)
        signal.removeEventListener('abort', aborted)
      }
      const check = (): void => {
        try {
          const frame = ready()
          if (frame === null) return
          done()
          resolve(frame)
        } catch (err) {
          done()
          reject(err)
        }
      }
      const aborted = (): void => {
        done()
        reject(signal.reason instanceof SplitInferenceError ? signal.reason : new SplitInferenceError('ERR_ABORTED', 'stopped waiting for a pushed input', { cause: signal.reason }))
      }
      const timer = setTimeout(() => {
        done()
        reject(new SplitInferenceError(PUSH_ERRORS.timeout, `the upstream server pushed no input for step ${step} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.changed.addEventListener('change', check)
      signal.addEventListener('abort', aborted)
      if (signal.aborted) aborted()
    })
  }

  /** The session ended: pushes are refused from now on and a waiting step fails. */
  close (): void {
    if (this.closed !== null) return
    this.closed = new SplitInferenceError(INFER_ERRORS.unknownSession, 'the session closed while waiting for a pushed input')
    this.frames.clear()
    this.changed.dispatchEvent(new Event('change'))
  }
}
