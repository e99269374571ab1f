import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import { HandoffControl, type InferError } from '../pb/infer.ts'
import { MAX_CHUNK_BYTES } from '../usxf/index.ts'
import { PermagentError } from '../util/index.ts'
import { HANDOFF_ERRORS } from './handoff-errors.ts'
import { SplitInferenceError } from './errors.ts'

/** Server-to-server hand-off of live sessions (proto/infer.proto, HandoffControl). */
export const HANDOFF_PROTOCOL = '/permagent/infer/handoff/1.0.0'
/** First byte of every message: a control message or one USXF record. */
export const HANDOFF_CONTROL = 0
export const HANDOFF_RECORD = 1
/** USXF chunk payload per record: a 2048-position session of a 1B model (~100 MB) is ~100 records. */
export const HANDOFF_CHUNK_BYTES = MAX_CHUNK_BYTES
/** Largest message: one chunk record plus its framing, or the header record (no token ids). */
export const HANDOFF_MAX_MESSAGE_BYTES = HANDOFF_CHUNK_BYTES + 64 * 1024
/**
 * Record bytes the source may send ahead of the target's credit. With one more record in flight
 * this stays under libp2p's 4 MiB stream read buffer, which aborts the stream when exceeded.
 */
export const HANDOFF_WINDOW_BYTES = 2 * HANDOFF_CHUNK_BYTES

export type HandoffIncoming = { kind: 'control', control: HandoffControl } | { kind: 'record', record: Uint8Array }

/** The peer's typed refusal, thrown on this side with its code. */
export function remoteHandoffError (error: InferError): SplitInferenceError {
  return new SplitInferenceError(error.code !== '' ? error.code : 'ERR_REMOTE', `the target replied: ${error.message}`, { remote: true })
}

/**
 * The hand-off protocol's view of a MessageChannel: typed control messages and raw USXF records,
 * each behind a one-byte kind, every read under a deadline.
 */
export class HandoffWire {
  readonly channel: MessageChannel

  constructor (channel: MessageChannel) {
    this.channel = channel
  }

  static async open (libp2p: Libp2p, peer: PeerId, options: { dialMs: number, signal: AbortSignal }): Promise<HandoffWire> {
    return new HandoffWire(await openChannel(libp2p, peer, HANDOFF_PROTOCOL, { maxMessageBytes: HANDOFF_MAX_MESSAGE_BYTES, dialMs: options.dialMs, signal: options.signal }))
  }

  async sendControl (control: HandoffControl, signal: AbortSignal): Promise<void> {
    const body = HandoffControl.encode(control)
    const frame = new Uint8Array(1 + body.byteLength)
    frame[0] = HANDOFF_CONTROL
    frame.set(body, 1)
    await this.channel.send(frame, signal)
  }

  /** Sends a record whose buffer has one byte of headroom in front (the encoder's `headroom: 1`). */
  async sendRecord (recordWithHeadroom: Uint8Array, signal: AbortSignal): Promise<void> {
    recordWithHeadroom[0] = HANDOFF_RECORD
    await this.channel.send(recordWithHeadroom, signal)
  }

  async sendError (err: unknown, signal: AbortSignal): Promise<void> {
    const code = err instanceof PermagentError ? err.code : 'ERR_INTERNAL'
    const message = err instanceof PermagentError ? err.message : 'the peer failed to take the hand-off'
    await this.sendControl({ error: { code, message: message.slice(0, 1024) } }, signal)
  }

  async receive (options: { signal: AbortSignal, timeoutMs: number }): Promise<HandoffIncoming> {
    const bytes = (await this.channel.receive({ signal: options.signal, timeoutMs: options.timeoutMs, timeoutCode: HANDOFF_ERRORS.handoffTimeout })).subarray()
    if (bytes.byteLength === 0) throw protocolError('an empty message')
    if (bytes[0] === HANDOFF_RECORD) return { kind: 'record', record: bytes.subarray(1) }
    if (bytes[0] !== HANDOFF_CONTROL) throw protocolError(`a message of unknown kind ${bytes[0]}`)
    let control: HandoffControl
    try {
      control = HandoffControl.decode(bytes.subarray(1))
    } catch (err) {
      throw new SplitInferenceError(HANDOFF_ERRORS.handoffProtocol, 'a hand-off control message does not decode', { cause: err })
    }
    const set = (['offer', 'accept', 'credit', 'adopted', 'error'] as const).filter((k) => control[k] != null)
    if (set.length !== 1) throw protocolError(`a control message sets exactly one field (${set.length} set)`)
    return { kind: 'control', control }
  }

  /** The next control message, which must carry `field` (`credit` messages are passed over when `skipCredit`); a peer's error is thrown. */
  async expect<K extends 'offer' | 'accept' | 'credit' | 'adopted'> (field: K, options: { signal: AbortSignal, timeoutMs: number }, skipCredit = false): Promise<NonNullable<HandoffControl[K]>> {
    for (;;) {
      const message = await this.receive(options)
      if (message.kind !== 'control') throw protocolError(`expected ${field}, got a record`)
      const { control } = message
      if (control.error != null) throw remoteHandoffError(control.error)
      const value = control[field]
      if (value != null) return value as NonNullable<HandoffControl[K]>
      if (skipCredit && control.credit != null) continue
      throw protocolError(`expected ${field}`)
    }
  }

  async close (signal: AbortSignal): Promise<void> {
    await this.channel.close(signal)
  }

  abort (err: Error): void {
    this.channel.abort(err)
  }
}

function protocolError (what: string): SplitInferenceError {
  return new SplitInferenceError(HANDOFF_ERRORS.handoffProtocol, `hand-off protocol: ${what}`)
}
