/**
 * Watches the split-inference exchanges a client makes, without changing them: each request a
 * MessageChannel sends to one of the given peers on the infer protocol and the reply it reads
 * next, timed from the start of the send to the end of the read (the client's round trip; its
 * frame encode before and decode after are outside), with the server's reported compute_ms and
 * the message sizes. Benchmarks only: it wraps MessageChannel.prototype for its lifetime.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { MessageChannel } from '../../src/mesh/index.ts'
import { InferRequest, InferResponse } from '../../src/pb/infer.ts'
import { INFER_PROTOCOL } from '../../src/split/index.ts'

export interface HopExchange {
  peer: string
  kind: 'open' | 'step' | 'close' | 'info'
  session: string
  /** Rows of a step's frame (0 for other requests). */
  rows: number
  /** Length-prefixed message bodies (protobuf), bytes. */
  requestBytes: number
  responseBytes: number
  /** The activation frames inside them (steps), bytes. */
  requestFrameBytes: number
  responseFrameBytes: number
  /** The server's stage time for a step, ms. */
  computeMs: number | null
  sentAt: number
  rttMs: number
  /** Bytes the meter counted from just before the send to just after the reply was read (null without a meter). */
  wireUp: number | null
  wireDown: number | null
}

/** Bytes sent to and received from a peer so far, on the wire. */
export type WireMeter = (peer: string) => { written: number, read: number }

/** A server-side step as a layer server on this thread handled it: from its read of the request to the start of its reply. */
export interface ServerHandling {
  rows: number
  handlingMs: number
}

export interface HopProbe {
  readonly exchanges: HopExchange[]
  /** Steps handled by layer servers on this thread (their channels' remote peer is a client), in order. */
  readonly handled: ServerHandling[]
  /** Replies that never came: when the client's read failed. */
  readonly failures: Array<{ peer: string, at: number }>
  /** Called once a request to a watched peer is written (before the reply is read). */
  onSent: ((peer: string, kind: HopExchange['kind'], rows: number) => void) | null
  clear: () => void
  stop: () => void
}

/** Rows of an activation frame: the u32 at offset 16 of its header (src/usxf/frame.ts). */
function frameRows (frame: Uint8Array | undefined): number {
  if (frame === undefined || frame.byteLength < 20) return 0
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(16, true)
}

export function watchHops (peers: () => ReadonlySet<string>, clients: () => ReadonlySet<string> = () => new Set(), meter?: WireMeter): HopProbe {
  const proto = MessageChannel.prototype
  const send = proto.send
  const receive = proto.receive
  const pending = new WeakMap<MessageChannel, { sentAt: number, request: InferRequest, requestBytes: number, peer: string, wire: { written: number, read: number } | undefined }>()
  const probe: HopProbe = {
    exchanges: [],
    handled: [],
    failures: [],
    onSent: null,
    clear () { probe.exchanges.length = 0; probe.handled.length = 0; probe.failures.length = 0 },
    stop () { proto.send = send; proto.receive = receive }
  }
  const watched = (channel: MessageChannel): boolean => channel.protocol === INFER_PROTOCOL && peers().has(channel.remotePeer.toString())
  const serving = (channel: MessageChannel): boolean => channel.protocol === INFER_PROTOCOL && clients().has(channel.remotePeer.toString())
  const received = new WeakMap<MessageChannel, { at: number, rows: number }>()
  proto.send = async function (this: MessageChannel, bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (serving(this)) {
      const request = received.get(this)
      received.delete(this)
      if (request !== undefined && request.rows > 0) probe.handled.push({ rows: request.rows, handlingMs: performance.now() - request.at })
      await send.call(this, bytes, signal)
      return
    }
    if (!watched(this)) { await send.call(this, bytes, signal); return }
    const peer = this.remotePeer.toString()
    const wire = meter?.(peer)
    const sentAt = performance.now()
    await send.call(this, bytes, signal)
    const request = InferRequest.decode(bytes)
    pending.set(this, { sentAt, request, requestBytes: bytes.byteLength, peer, wire })
    const kind = request.step != null ? 'step' : request.open != null ? 'open' : request.close != null ? 'close' : 'info'
    probe.onSent?.(peer, kind, frameRows(request.step?.frame))
  }
  proto.receive = async function (this: MessageChannel, options?: Parameters<MessageChannel['receive']>[0]): Promise<Uint8ArrayList> {
    if (serving(this)) {
      const bytes = await receive.call(this, options)
      const rows = frameRows(InferRequest.decode(bytes).step?.frame)
      received.set(this, { at: performance.now(), rows })
      return bytes
    }
    const sent = pending.get(this)
    if (sent === undefined) return await receive.call(this, options)
    pending.delete(this)
    let bytes: Uint8ArrayList
    try {
      bytes = await receive.call(this, options)
    } catch (err) {
      probe.failures.push({ peer: sent.peer, at: performance.now() })
      throw err
    }
    const rttMs = performance.now() - sent.sentAt
    const wire = sent.wire !== undefined ? meter?.(sent.peer) : undefined
    const { request } = sent
    const response = InferResponse.decode(bytes)
    probe.exchanges.push({
      peer: sent.peer,
      kind: request.step != null ? 'step' : request.open != null ? 'open' : request.close != null ? 'close' : 'info',
      session: request.step?.sessionId ?? request.open?.sessionId ?? request.close?.sessionId ?? '',
      rows: frameRows(request.step?.frame),
      requestBytes: sent.requestBytes,
      responseBytes: bytes.byteLength,
      requestFrameBytes: request.step?.frame.byteLength ?? 0,
      responseFrameBytes: response.result?.frame.byteLength ?? 0,
      computeMs: response.result?.computeMs ?? null,
      sentAt: sent.sentAt,
      rttMs,
      wireUp: wire !== undefined && sent.wire !== undefined ? wire.written - sent.wire.written : null,
      wireDown: wire !== undefined && sent.wire !== undefined ? wire.read - sent.wire.read : null
    })
    return bytes
  }
  return probe
}
