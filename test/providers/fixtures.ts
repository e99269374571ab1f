import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { openaiRoutes } from '../../node/api/routes/openai.ts'
import { startControlApi } from '../../node/api/server.ts'
import { MessageChannel, openChannel } from '../../src/mesh/index.ts'
import { importModel } from '../../src/model/index.ts'
import { InferResponse } from '../../src/pb/infer.ts'
import { createPermagent, type Permagent } from '../../src/permagent.ts'
import { INFER_PROTOCOL } from '../../src/split/index.ts'
import { decodeActivationFrame, encodeActivationFrame } from '../../src/usxf/index.ts'
import { silentLogger } from '../../src/util/index.ts'
import { tempDir, tinyCheckpoint, type TempDir } from '../model/fixtures.ts'

/** A tiny synthetic checkpoint (5 layers, with a word-level tokenizer) written once per test file. */
export async function tinyModelSource (dir: string): Promise<string> {
  return await tinyCheckpoint(join(dir, 'ckpt'), { layers: 5 })
}

export interface OpenAiNode {
  node: Permagent
  dataDir: string
  /** The /v1 root of its OpenAI-compatible API. */
  baseUrl: string
  token: string
  close: () => Promise<void>
}

/**
 * A real node serving its own OpenAI-compatible API (the daemon's /v1 routes and HTTP server) on
 * loopback, in this process, with the tiny model imported as `model`: what the remote provider is
 * tested against.
 */
export async function startOpenAiNode (source: string, options: { model?: string } = {}): Promise<OpenAiNode & { dir: TempDir }> {
  const dir = await tempDir('permagent-openai-node-')
  const dataDir = join(dir.path, 'data')
  await importModel(dataDir, { source, name: options.model ?? 'tiny' })
  const node = await createPermagent({ dataDir, network: { listen: [`/memory/openai-${randomBytes(4).toString('hex')}`], mdns: false } })
  await node.start()
  const token = randomBytes(24).toString('hex')
  let api
  try {
    api = await startControlApi({ node, token, port: 0, routes: openaiRoutes, logger: silentLogger(), onShutdownRequested: () => {} })
  } catch (err) {
    await node.stop()
    await dir.cleanup()
    throw err
  }
  return {
    dir,
    node,
    dataDir,
    baseUrl: `${api.url}/v1`,
    token,
    close: async () => {
      await api.stop()
      await node.stop()
      await dir.cleanup()
    }
  }
}

/**
 * A test-only lying layer server: `libp2p` answers /permagent/infer/1.0.0 by forwarding every
 * message to `backend`'s real server and, in every result frame, moves each value by up to a
 * quarter of its row's rms (test/split/verify.test.ts builds the same liar). The product server
 * has no lie switch. Returns how many frames it changed so far.
 */
export async function startLiarProxy (libp2p: Libp2p, backend: PeerId, hidden: number): Promise<{ lies: () => number }> {
  let lies = 0
  const perturb = (values: Float32Array): Float32Array => {
    const out = values.slice()
    for (let r = 0; r < out.length / hidden; r++) {
      let sum = 0
      for (let i = r * hidden; i < (r + 1) * hidden; i++) sum += out[i] * out[i]
      const rms = Math.sqrt(sum / hidden)
      for (let i = r * hidden; i < (r + 1) * hidden; i++) out[i] += 0.25 * rms * Math.sin(i * 12.9898 + 1)
    }
    return out
  }
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
          lies++
          response.result.frame = encodeActivationFrame({ ...frame, values: perturb(frame.values) }, { quantization: frame.quantization }) as Uint8Array<ArrayBuffer>
        }
        await inbound.send(InferResponse.encode(response), AbortSignal.timeout(10_000))
      }
    } catch (err) {
      inbound.abort(err as Error)
      outbound?.abort(err as Error)
    }
  })
  return { lies: () => lies }
}
