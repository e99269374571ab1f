import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { importModel } from '../../src/model/index.ts'
import { createSwarm } from '../../src/simulation/index.ts'
import { createLayerServer, MeshModel, type LayerServer } from '../../src/split/index.ts'
import { tempDir, tinyCheckpoint } from '../model/fixtures.ts'
import { LAYERS, promptIds, SPANS } from './fixtures.ts'

// Per-token latency of a 3-hop chain, relayed and pushed, side by side on one swarm whose memory
// transport delays every link. Figures only (docs/split-inference.md "Push"): speed is never asserted.
const LATENCIES_MS = [0, 10, 25]
const TOKENS = 12

test('per-token latency over 3 hops with injected link latency: relayed vs push (figures; outputs equal)', async (t) => {
  const dir = await tempDir('permagent-push-latency-')
  try {
    const dataDir = join(dir.path, 'data')
    await importModel(dataDir, { source: await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS }), name: 'tiny' })
    for (const latencyMs of LATENCIES_MS) {
      const swarm = await createSwarm({ nodes: 4, topology: 'full', latencyMs })
      const servers: LayerServer[] = []
      const meshes: MeshModel[] = []
      try {
        await swarm.connect()
        await swarm.waitForTopology({ timeoutMs: 20_000 })
        for (let i = 0; i < 3; i++) {
          const server = createLayerServer({ libp2p: swarm.nodes[i + 1].mesh.libp2p, dataDir, model: 'tiny', layers: SPANS[i], threads: 1 })
          await server.start()
          servers.push(server)
        }
        const open = async (push: boolean): Promise<MeshModel> => {
          const mesh = await MeshModel.open({ libp2p: swarm.nodes[0].mesh.libp2p, dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, chain: SPANS.map((span, i) => ({ ...span, peers: [swarm.nodes[i + 1].mesh.peerId] })), quantization: 'f16', threads: 1, push })
          meshes.push(mesh)
          return mesh
        }
        const relayed = await open(false)
        const pushed = await open(true)
        const request = { promptIds: promptIds(8, 3), maxTokens: TOKENS, stopTokens: [] }
        // a warm-up each (streams dialed, sessions opened), then alternate so both see the same load
        await relayed.generate(request)
        await pushed.generate(request)
        const perToken = { relayed: [] as number[], push: [] as number[] }
        let tokens: number[] | null = null
        for (let round = 0; round < 3; round++) {
          for (const [name, mesh] of [['relayed', relayed], ['push', pushed]] as const) {
            const result = await mesh.generate(request)
            tokens ??= result.tokens
            assert.deepEqual(result.tokens, tokens, `${name} gives the same tokens`)
            if (name === 'push') assert.equal(result.push?.steps, TOKENS)
            // decode steps: every generated token after the first (the prompt step is prefill)
            perToken[name].push(result.decodeMs / (result.tokens.length - 1))
          }
        }
        const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
        t.diagnostic(`link latency ${latencyMs} ms, 3 hops, f16: relayed ${median(perToken.relayed).toFixed(1)} ms/token, push ${median(perToken.push).toFixed(1)} ms/token`)
      } finally {
        for (const mesh of meshes) await mesh.close()
        for (const server of servers) await server.stop()
        await swarm.stop()
      }
    }
  } finally {
    await dir.cleanup()
  }
})
