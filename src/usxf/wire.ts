import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, RequestError, type MessageChannel } from '../mesh/index.ts'
import { UsxfControl } from '../pb/usxf.ts'
import { PermagentError } from '../util/index.ts'
import { UsxfProtocolError } from './errors.ts'

export const USXF_PROTOCOL = '/permagent/usxf/1.0.0'
/** Frame kinds: the first byte of every message on the stream. */
export const FRAME_CONTROL = 0
export const FRAME_RECORD = 1
/**
 * Largest message: a 1 MiB chunk record plus framing, or a header with a long token list. Kept well
 * under libp2p's 4 MiB read buffer, which also bounds the flow-control window below.
 */
export const MAX_MESSAGE_BYTES = 2 * 1024 * 1024 + 64 * 1024
export const MAX_CHUNK_BYTES = 1024 * 1024
/** Chunk bytes the source may have sent but the target not yet acknowledged. */
export const WINDOW_BYTES = 2 * 1024 * 1024

export type Incoming = { kind: 'control', control: UsxfControl } | { kind: 'record', record: Uint8Array }

/**
 * The migration protocol's view of a MessageChannel: typed control messages and raw USXF records,
 * each with a one-byte kind prefix, every read bounded by a deadline.
 */
export class MigrationWire {
  readonly channel: MessageChannel

  constructor (channel: MessageChannel) {
    this.channel = channel
  }

  static async open (libp2p: Libp2p, peer: PeerId, options: { signal?: AbortSignal, dialMs?: number } = {}): Promise<MigrationWire> {
    return new MigrationWire(await openChannel(libp2p, peer, USXF_PROTOCOL, { maxMessageBytes: MAX_MESSAGE_BYTES, dialMs: options.dialMs, signal: options.signal }))
  }

  async sendControl (control: UsxfControl, signal?: AbortSignal): Promise<void> {
    const body = UsxfControl.encode(control)
    const frame = new Uint8Array(1 + body.byteLength)
    frame[0] = FRAME_CONTROL
    frame.set(body, 1)
    await this.channel.send(frame, signal)
  }

  /** Sends a record whose buffer has one byte of headroom in front (the encoder's `headroom: 1`). */
  async sendRecord (recordWithHeadroom: Uint8Array, signal?: AbortSignal): Promise<void> {
    recordWithHeadroom[0] = FRAME_RECORD
    await this.channel.send(recordWithHeadroom, signal)
  }

  async sendError (err: unknown, signal?: AbortSignal): Promise<void> {
    const code = err instanceof PermagentError ? err.code : 'ERR_INTERNAL'
    const message = err instanceof PermagentError ? err.message : 'the peer failed to handle the migration'
    await this.sendControl({ error: { code, message: message.slice(0, 1024) } }, signal)
  }

  async receive (options: { signal?: AbortSignal, timeoutMs: number }): Promise<Incoming> {
    const list = await this.channel.receive({ signal: options.signal, timeoutMs: options.timeoutMs })
    const bytes = list.subarray()
    if (bytes.byteLength === 0) throw new UsxfProtocolError('empty message')
    if (bytes[0] === FRAME_RECORD) return { kind: 'record', record: bytes.subarray(1) }
    if (bytes[0] !== FRAME_CONTROL) throw new UsxfProtocolError(`unknown frame kind ${bytes[0]}`)
    try {
      return { kind: 'control', control: UsxfControl.decode(bytes.subarray(1), { limits: { offer: { quantizations: 8 }, capabilities: { quantizations: 8 }, attached: { continuation: 4096 } } }) }
    } catch (err) {
      throw new UsxfProtocolError(`a control message does not decode: ${(err as Error).message}`)
    }
  }

  /**
   * Reads the next control message, which must carry `field` (messages carrying one of `skip` are
   * passed over); a typed error reply from the peer is thrown as a RequestError with the peer's code
   * (remote: true).
   */
  async expect<K extends keyof UsxfControl> (field: K, options: { signal?: AbortSignal, timeoutMs: number }, skip: Array<keyof UsxfControl> = []): Promise<NonNullable<UsxfControl[K]>> {
    for (;;) {
      const message = await this.receive(options)
      if (message.kind !== 'control') throw new UsxfProtocolError(`expected ${String(field)}, got a record`)
      const control = message.control
      if (control.error != null) throw remoteError(control.error)
      const value = control[field]
      if (value != null) return value as NonNullable<UsxfControl[K]>
      if (skip.some((k) => control[k] != null)) continue
      throw new UsxfProtocolError(`expected ${String(field)}, got ${Object.keys(control).filter((k) => control[k as keyof UsxfControl] != null).join(', ') || 'an empty message'}`)
    }
  }

  async close (signal?: AbortSignal): Promise<void> {
    await this.channel.close(signal)
  }

  abort (err: Error): void {
    this.channel.abort(err)
  }
}

/** A peer's typed refusal, as callers of the mesh see every remote error. */
export function remoteError (error: { code: string, message: string }): RequestError {
  return new RequestError(error.code !== '' ? error.code : 'ERR_REMOTE', USXF_PROTOCOL, `peer replied: ${error.message}`, { remote: true })
}
