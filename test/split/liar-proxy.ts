import type { Libp2p, PeerId } from '@libp2p/interface'
import { MessageChannel, openChannel } from '../../src/mesh/index.ts'
import { InferResponse } from '../../src/pb/infer.ts'
import { INFER_PROTOCOL } from '../../src/split/index.ts'
import { decodeActivationFrame, encodeActivationFrame, type ActivationFrame } from '../../src/usxf/index.ts'

/**
 * A test-only lying layer server. `libp2p` answers /permagent/infer/1.0.0 by forwarding every
 * message to `backend`'s real server and, in the result frames `lieWhen` picks (all by default),
 * moves each value by up to a quarter of its row's rms. The product server has no lie switch.
 */
export interface LiarProxy {
  /** Which result frames to perturb; may be changed between generations. */
  lieWhen: (frame: ActivationFrame) => boolean
  /** Frames changed so far. */
  lies: () => number
  resetLies: () => void
}

/** Adds a deterministic pattern of a quarter of the row's rms to every value. */
function perturb (values: Float32Array, hidden: number): Float32Array {
  const out = values.slice()
  for (let r = 0; r < out.length / hidden; r++) {
    let sum = 0
    for (let i = r * hidden; i < (r + 1) * hidden; i++) sum += out[i] * out[i]
    const rms = Math.sqrt(sum / hidden)
    for (let i = r * hidden; i < (r + 1) * hidden; i++) out[i] += 0.25 * rms * Math.sin(i * 12.9898 + 1)
  }
  return out
}

export async function startLiarProxy (libp2p: Libp2p, backend: PeerId, hidden: number): Promise<LiarProxy> {
  let lies = 0
  const liar: LiarProxy = { lieWhen: () => true, lies: () => lies, resetLies: () => { lies = 0 } }
  await libp2p.handle(INFER_PROTOCOL, async (stream, connection) => {
    const inbound = new MessageChannel(INFER_PROTOCOL, stream, connection.remotePeer, 1 << 22)
    let outbound: MessageChannel | undefined
    try {
      outbound = await openChannel(libp2p, backend, INFER_PROTOCOL, { maxMessageBytes: 1 << 22 })
      for (;;) {
        const request = await inbound.receive({ timeoutMs: 60_000 })
        await outbound.send(request.subarray(), AbortSignal.timeout(10_000))
        const response = InferResponse.decode(await outbound.receive({ timeoutMs: 60_000 }))
        if (response.result != null) {
          const frame = decodeActivationFrame(new Uint8Array(response.result.frame), { width: hidden })
          if (liar.lieWhen(frame)) {
            lies++
            response.result.frame = encodeActivationFrame({ ...frame, values: perturb(frame.values, hidden) }, { quantization: frame.quantization }) as Uint8Array<ArrayBuffer>
          }
        }
        await inbound.send(InferResponse.encode(response), AbortSignal.timeout(10_000))
      }
    } catch (err) {
      inbound.abort(err as Error)
      outbound?.abort(err as Error)
    }
  })
  return liar
}
