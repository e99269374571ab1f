import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Uint8ArrayList } from 'uint8arraylist'
import { ErrorReply, ResponseFrame } from '../pb/reqresp.ts'
import { PermagentError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { RequestError } from './errors.ts'

/** Encodes and decodes one message type (protons codecs from src/pb fit this). */
export interface MessageCodec<T> {
  encode: (message: T) => Uint8Array
  decode: (bytes: Uint8Array | Uint8ArrayList) => T
}

/** Deadlines per phase of an exchange. */
export interface PhaseTimeouts {
  /** Opening the connection and negotiating the protocol. */
  dialMs: number
  /** From sending the request to the first byte of the response. */
  firstByteMs: number
  /** The whole exchange, dial included. */
  totalMs: number
}

export const DEFAULT_TIMEOUTS: PhaseTimeouts = { dialMs: 10_000, firstByteMs: 10_000, totalMs: 30_000 }

/** A request/response protocol: one request message, one response message, each size-limited. */
export interface ProtocolSpec<Req, Res> {
  protocol: string
  request: MessageCodec<Req>
  response: MessageCodec<Res>
  maxRequestBytes: number
  maxResponseBytes: number
  timeouts?: Partial<PhaseTimeouts>
}

export interface RequestContext {
  remotePeer: PeerId
  connection: Connection
  signal: AbortSignal
}

function isClosedError (err: unknown): boolean {
  const name = (err as Error)?.name ?? ''
  return name === 'UnexpectedEOFError' || name === 'StreamResetError' || name === 'StreamClosedError' || name === 'StreamStateError'
}

function translateStreamError (protocol: string, err: unknown, maxBytes: number): PermagentError {
  if (err instanceof PermagentError) return err
  const name = (err as Error)?.name ?? ''
  if (name === 'InvalidDataLengthError' || name === 'InvalidMessageLengthError' || name === 'InvalidDataLengthLengthError') {
    return new RequestError('ERR_MESSAGE_TOO_LARGE', protocol, `message exceeds the ${maxBytes}-byte limit`, { cause: err })
  }
  if (isClosedError(err)) return new RequestError('ERR_STREAM_CLOSED', protocol, 'the stream closed before a whole message arrived', { cause: err })
  return new RequestError('ERR_STREAM', protocol, (err as Error)?.message ?? String(err), { cause: err })
}

/**
 * A message channel over one libp2p stream: length-prefixed frames with a size limit per frame and
 * a deadline per read. Protocols with several round trips (sync, inference sessions) use it
 * directly; one-shot request/response is built on it.
 */
export class MessageChannel {
  readonly protocol: string
  readonly stream: Stream
  readonly remotePeer: PeerId
  private readonly lp: LengthPrefixedStream<Stream>
  private readonly maxMessageBytes: number

  constructor (protocol: string, stream: Stream, remotePeer: PeerId, maxMessageBytes: number) {
    this.protocol = protocol
    this.stream = stream
    this.remotePeer = remotePeer
    this.maxMessageBytes = maxMessageBytes
    this.lp = lpStream(stream, { maxDataLength: maxMessageBytes })
  }

  async send (bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (bytes.byteLength > this.maxMessageBytes) {
      throw new RequestError('ERR_MESSAGE_TOO_LARGE', this.protocol, `outgoing message is ${bytes.byteLength} bytes; the limit is ${this.maxMessageBytes}`)
    }
    try {
      await this.lp.write(bytes, { signal })
    } catch (err) {
      throw translateStreamError(this.protocol, err, this.maxMessageBytes)
    }
  }

  /** Reads one frame; `timeoutMs` bounds the wait and is reported as `timeoutCode`. */
  async receive (options: { signal?: AbortSignal, timeoutMs?: number, timeoutCode?: string } = {}): Promise<Uint8ArrayList> {
    const timeout = options.timeoutMs != null ? AbortSignal.timeout(options.timeoutMs) : undefined
    const signal = timeout != null ? AbortSignal.any([timeout, ...(options.signal != null ? [options.signal] : [])]) : options.signal
    try {
      return await this.lp.read({ signal })
    } catch (err) {
      if (timeout?.aborted === true) {
        throw new RequestError(options.timeoutCode ?? 'ERR_READ_TIMEOUT', this.protocol, `no message within ${options.timeoutMs} ms`, { cause: err })
      }
      if (options.signal?.aborted === true) throw new RequestError('ERR_ABORTED', this.protocol, 'aborted', { cause: err })
      throw translateStreamError(this.protocol, err, this.maxMessageBytes)
    }
  }

  /** Sends a typed error reply frame (for protocols whose responses are ResponseFrames). */
  async sendError (code: string, message: string, signal?: AbortSignal): Promise<void> {
    await this.send(ResponseFrame.encode({ error: { code, message: message.slice(0, 1024) } }), signal)
  }

  async close (signal?: AbortSignal): Promise<void> {
    try {
      await this.stream.close({ signal })
    } catch (err) {
      this.stream.abort(err as Error)
    }
  }

  abort (err: Error): void {
    this.stream.abort(err)
  }
}

/** Opens a channel to a peer, bounded by `dialMs`. */
export async function openChannel (libp2p: Libp2p, peer: PeerId | Multiaddr, protocol: string, options: { maxMessageBytes: number, dialMs?: number, signal?: AbortSignal }): Promise<MessageChannel> {
  const dialMs = options.dialMs ?? DEFAULT_TIMEOUTS.dialMs
  const timeout = AbortSignal.timeout(dialMs)
  const signal = AbortSignal.any([timeout, ...(options.signal != null ? [options.signal] : [])])
  let stream: Stream
  try {
    stream = await libp2p.dialProtocol(peer, protocol, { signal })
  } catch (err) {
    if (timeout.aborted) throw new RequestError('ERR_DIAL_TIMEOUT', protocol, `could not open a stream within ${dialMs} ms`, { cause: err })
    if (options.signal?.aborted === true) throw new RequestError('ERR_ABORTED', protocol, 'aborted while dialing', { cause: err })
    throw new RequestError('ERR_DIAL_FAILED', protocol, (err as Error)?.message ?? String(err), { cause: err })
  }
  const remotePeer = findRemotePeer(libp2p, stream, peer)
  return new MessageChannel(protocol, stream, remotePeer, options.maxMessageBytes)
}

function findRemotePeer (libp2p: Libp2p, stream: Stream, peer: PeerId | Multiaddr): PeerId {
  if (!('getComponents' in peer)) return peer
  for (const connection of libp2p.getConnections()) {
    if (connection.streams.includes(stream)) return connection.remotePeer
  }
  const id = peer.getComponents().find((c) => c.name === 'p2p')?.value
  const connection = libp2p.getConnections().find((c) => c.remotePeer.toString() === id)
  if (connection != null) return connection.remotePeer
  throw new RequestError('ERR_DIAL_FAILED', stream.protocol ?? '', 'could not tell which peer the stream reached')
}

/** Decodes a response frame: the body through `codec`, or a RequestError carrying the remote's code. */
export function decodeResponseFrame<Res> (protocol: string, bytes: Uint8ArrayList | Uint8Array, codec: MessageCodec<Res>): Res {
  let frame: ResponseFrame
  try {
    frame = ResponseFrame.decode(bytes)
  } catch (err) {
    throw new RequestError('ERR_INVALID_MESSAGE', protocol, 'the response frame is not valid protobuf', { cause: err })
  }
  if (frame.error != null) throw new RequestError(frame.error.code !== '' ? frame.error.code : 'ERR_REMOTE', protocol, `peer replied: ${frame.error.message}`, { remote: true })
  if (frame.body == null) throw new RequestError('ERR_INVALID_MESSAGE', protocol, 'the response frame has neither body nor error')
  try {
    return codec.decode(frame.body)
  } catch (err) {
    throw new RequestError('ERR_INVALID_MESSAGE', protocol, 'the response body does not decode', { cause: err })
  }
}

/**
 * Sends one request and waits for its response, with a deadline per phase (dial, first byte,
 * whole exchange) and size limits both ways. A typed error reply from the peer is thrown as a
 * RequestError with the peer's code and `remote: true`.
 */
export async function sendRequest<Req, Res> (libp2p: Libp2p, peer: PeerId | Multiaddr, spec: ProtocolSpec<Req, Res>, request: Req, options: { signal?: AbortSignal, timeouts?: Partial<PhaseTimeouts> } = {}): Promise<Res> {
  const timeouts = { ...DEFAULT_TIMEOUTS, ...spec.timeouts, ...options.timeouts }
  const total = AbortSignal.timeout(timeouts.totalMs)
  const signal = AbortSignal.any([total, ...(options.signal != null ? [options.signal] : [])])
  const requestBytes = spec.request.encode(request)
  if (requestBytes.byteLength > spec.maxRequestBytes) {
    throw new RequestError('ERR_MESSAGE_TOO_LARGE', spec.protocol, `request is ${requestBytes.byteLength} bytes; the limit is ${spec.maxRequestBytes}`)
  }
  let channel: MessageChannel | undefined
  try {
    // the response frame adds a few bytes of protobuf framing around the body
    channel = await openChannel(libp2p, peer, spec.protocol, { maxMessageBytes: Math.max(spec.maxRequestBytes, spec.maxResponseBytes + 16), dialMs: timeouts.dialMs, signal })
    await channel.send(requestBytes, signal)
    const bytes = await channel.receive({ signal, timeoutMs: timeouts.firstByteMs, timeoutCode: 'ERR_FIRST_BYTE_TIMEOUT' })
    const response = decodeResponseFrame(spec.protocol, bytes, spec.response)
    await channel.close(signal)
    return response
  } catch (err) {
    channel?.abort(err as Error)
    if (total.aborted && !(err instanceof RequestError && err.code === 'ERR_FIRST_BYTE_TIMEOUT')) {
      throw new RequestError('ERR_RESPONSE_TIMEOUT', spec.protocol, `no whole response within ${timeouts.totalMs} ms`, { cause: err })
    }
    throw err
  }
}

export interface HandlerOptions {
  logger: Logger
  maxInboundStreams?: number
  /** Deadline for reading the request and for the handler's work. */
  timeoutMs?: number
}

/**
 * Serves a request/response protocol: reads one size-limited request, runs `handler`, writes the
 * response or a typed error reply. A handler throwing a PermagentError replies with its code and
 * message; anything else replies ERR_INTERNAL without leaking details.
 */
export async function handleRequests<Req, Res> (libp2p: Libp2p, spec: ProtocolSpec<Req, Res>, handler: (request: Req, context: RequestContext) => Promise<Res>, options: HandlerOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? (spec.timeouts?.totalMs ?? DEFAULT_TIMEOUTS.totalMs)
  await libp2p.handle(spec.protocol, async (stream, connection) => {
    const signal = AbortSignal.timeout(timeoutMs)
    const channel = new MessageChannel(spec.protocol, stream, connection.remotePeer, Math.max(spec.maxRequestBytes, spec.maxResponseBytes + 16))
    let request: Req
    try {
      const bytes = await channel.receive({ signal })
      if (bytes.byteLength > spec.maxRequestBytes) {
        await channel.sendError('ERR_MESSAGE_TOO_LARGE', `request is ${bytes.byteLength} bytes; the limit is ${spec.maxRequestBytes}`, signal)
        await channel.close(signal)
        return
      }
      request = spec.request.decode(bytes)
    } catch (err) {
      options.logger.debug({ protocol: spec.protocol, peer: connection.remotePeer.toString(), err: (err as Error).message }, 'bad request')
      const code = err instanceof PermagentError ? err.code : 'ERR_INVALID_MESSAGE'
      await channel.sendError(code, err instanceof PermagentError ? err.message : 'the request does not decode', signal).catch(() => {})
      await channel.close(signal)
      return
    }
    let frame: Uint8Array
    try {
      const response = await handler(request, { remotePeer: connection.remotePeer, connection, signal })
      const body = spec.response.encode(response)
      frame = body.byteLength > spec.maxResponseBytes
        ? ResponseFrame.encode({ error: { code: 'ERR_MESSAGE_TOO_LARGE', message: `response would be ${body.byteLength} bytes; the limit is ${spec.maxResponseBytes}` } })
        : ResponseFrame.encode({ body: body as Uint8Array<ArrayBuffer> })
    } catch (err) {
      if (err instanceof PermagentError) {
        frame = ResponseFrame.encode({ error: { code: err.code, message: err.message.slice(0, 1024) } })
      } else {
        options.logger.warn({ protocol: spec.protocol, err }, 'request handler failed')
        frame = ResponseFrame.encode({ error: { code: 'ERR_INTERNAL', message: 'the peer failed to handle the request' } })
      }
    }
    try {
      await channel.send(frame, signal)
      await channel.close(signal)
    } catch (err) {
      channel.abort(err as Error)
    }
  }, { maxInboundStreams: options.maxInboundStreams ?? 64 })
}

export { ErrorReply }
