import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import type { ModelManifest } from '../model/index.ts'
import { decodeActivationFrame, encodeActivationFrame, type UsxfQuantization } from '../usxf/index.ts'
import { InferRequest, InferResponse } from '../pb/infer.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { aligned, decodeInferResponse, hexToBytes, INFER_PROTOCOL } from './protocol.ts'

/** What a side session needs to reach a server: the node, the model, the wire format and deadlines. */
export interface SideWire {
  libp2p: Libp2p
  manifest: ModelManifest
  quantization: UsxfQuantization
  /** Positions the session is opened for (the generation's). */
  maxLength: number
  maxMessageBytes: number
  dialMs: number
  replyMs: number
  signal: AbortSignal
}

/**
 * A session on one layer server that is not the chain's: a verifier catching up on a span, a
 * referee, or a canary. Its id is random like a generation's, so the server cannot tell it from
 * one. Counts the bytes it moves (verification's cost).
 */
export class SideSession {
  readonly peer: PeerId
  readonly span: { start: number, end: number }
  /** Positions the server's cache holds for this session. */
  positions = 0
  /** Bytes sent and received, framing included. */
  bytes = 0
  private readonly id = randomBytes(12).toString('hex')
  private readonly wire: SideWire
  private channel: MessageChannel | null = null
  private nextStep = 0

  private constructor (wire: SideWire, peer: PeerId, span: { start: number, end: number }) {
    this.wire = wire
    this.peer = peer
    this.span = span
  }

  static async open (wire: SideWire, peer: PeerId, span: { start: number, end: number }): Promise<SideSession> {
    const session = new SideSession(wire, peer, span)
    try {
      await session.start()
    } catch (err) {
      session.abort(err as Error)
      throw err
    }
    return session
  }

  private async start (): Promise<void> {
    const { libp2p, manifest } = this.wire
    this.channel = await openChannel(libp2p, this.peer, INFER_PROTOCOL, { maxMessageBytes: this.wire.maxMessageBytes, dialMs: this.wire.dialMs, signal: this.wire.signal })
    const response = await this.exchange({
      open: {
        sessionId: this.id,
        configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: this.span.start,
        layerEnd: this.span.end,
        maxLength: this.wire.maxLength
      }
    })
    const opened = response.opened
    if (opened == null || opened.sessionId !== this.id || opened.hiddenSize !== manifest.spec.hiddenSize || opened.maxLength < this.wire.maxLength) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not open the session as asked')
    }
    if (opened.maxStepRows < this.wire.maxLength) throw new SplitInferenceError(INFER_ERRORS.maxLength, `the server takes steps of ${opened.maxStepRows} rows; this session needs ${this.wire.maxLength}`)
  }

  private async exchange (request: InferRequest): Promise<InferResponse> {
    const channel = this.channel
    if (channel === null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the side session is closed')
    const bytes = InferRequest.encode(request)
    await channel.send(bytes, AbortSignal.any([this.wire.signal, AbortSignal.timeout(this.wire.replyMs)]))
    const reply = await channel.receive({ signal: this.wire.signal, timeoutMs: this.wire.replyMs, timeoutCode: 'ERR_REPLY_TIMEOUT' })
    this.bytes += bytes.byteLength + reply.byteLength
    return decodeInferResponse(reply)
  }

  /** Runs `values` (whole rows) at the session's next positions; returns the server's output rows. */
  async step (values: Float32Array): Promise<Float32Array> {
    const width = this.wire.manifest.spec.hiddenSize
    const rows = values.length / width
    const positionStart = this.positions
    const frame = encodeActivationFrame({ step: this.nextStep, positionStart, rows, width, values }, { quantization: this.wire.quantization })
    const response = await this.exchange({ step: { sessionId: this.id, frame: frame as Uint8Array<ArrayBuffer> } })
    if (response.result == null) throw new SplitInferenceError(INFER_ERRORS.protocol, 'the server did not answer the step with a result')
    const out = decodeActivationFrame(aligned(response.result.frame), { width, maxRows: rows })
    if (out.step !== this.nextStep || out.positionStart !== positionStart || out.rows !== rows) {
      throw new SplitInferenceError(INFER_ERRORS.protocol, `the server answered step ${out.step} at ${out.positionStart} (${out.rows} rows) for step ${this.nextStep} at ${positionStart} (${rows} rows)`)
    }
    this.nextStep++
    this.positions += rows
    return out.values
  }

  /** Closes the session (best effort, bounded by the reply deadline). */
  async close (): Promise<void> {
    const channel = this.channel
    if (channel === null) return
    this.channel = null
    try {
      const signal = AbortSignal.timeout(this.wire.replyMs)
      await channel.send(InferRequest.encode({ close: { sessionId: this.id } }), signal)
      await channel.receive({ signal, timeoutMs: this.wire.replyMs })
      await channel.close(signal)
    } catch (err) {
      channel.abort(err as Error)
    }
  }

  abort (err: Error): void {
    this.channel?.abort(err)
    this.channel = null
  }
}

/** The values a server decodes from `values` sent at `quantization` (what it actually computed on). */
export function wireValues (values: Float32Array, width: number, quantization: UsxfQuantization): Float32Array {
  if (quantization === 'none') return values
  const frame = encodeActivationFrame({ step: 0, positionStart: 0, rows: values.length / width, width, values }, { quantization })
  return decodeActivationFrame(frame, { width, maxRows: values.length / width }).values
}
