import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { importModel } from '../../src/model/index.ts'
import { createSwarm, type Swarm } from '../../src/simulation/index.ts'
import { createLayerServer, type LayerServer, type LayerServerLimits } from '../../src/split/index.ts'
import { tempDir, tinyCheckpoint, type TempDir } from '../model/fixtures.ts'

/** Layers of the test model: head [0, 1), servers [1, 2), [2, 3), [3, 4), tail [4, 5). */
export const LAYERS = 5
export const SPANS = [{ start: 1, end: 2 }, { start: 2, end: 3 }, { start: 3, end: 4 }]

export interface SplitWorld {
  dir: TempDir
  dataDir: string
  model: string
  swarm: Swarm
  /** servers[i] runs on swarm node i + 1; node 0 is the client. */
  servers: LayerServer[]
  peer: (node: number) => PeerId
  close: () => Promise<void>
}

/**
 * A tiny synthetic model (5 layers, hidden 64, vocab 256) imported once into a shared store, and
 * an in-process swarm: node 0 is the client, nodes 1.. each serve the span given for them, and
 * `extraNodes` more nodes serve nothing.
 */
export async function splitWorld (spans: Array<{ start: number, end: number }>, options: { limits?: Partial<LayerServerLimits>, checkpoint?: string, model?: string, extraNodes?: number } = {}): Promise<SplitWorld> {
  const dir = await tempDir('permagent-split-')
  const dataDir = join(dir.path, 'data')
  const model = options.model ?? 'tiny'
  await importModel(dataDir, { source: options.checkpoint ?? await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS }), name: model })
  const swarm = await createSwarm({ nodes: spans.length + 1 + (options.extraNodes ?? 0), topology: 'full' })
  const servers: LayerServer[] = []
  try {
    await swarm.connect()
    await swarm.waitForTopology({ timeoutMs: 20_000 })
    for (let i = 0; i < spans.length; i++) {
      const server = createLayerServer({ libp2p: swarm.nodes[i + 1].mesh.libp2p, dataDir, model, layers: spans[i], threads: 1, limits: options.limits })
      await server.start()
      servers.push(server)
    }
  } catch (err) {
    for (const server of servers) await server.stop()
    await swarm.stop()
    await dir.cleanup()
    throw err
  }
  return {
    dir,
    dataDir,
    model,
    swarm,
    servers,
    peer: (node) => swarm.nodes[node].mesh.peerId,
    close: async () => {
      for (const server of servers) await server.stop()
      await swarm.stop()
      await dir.cleanup()
    }
  }
}

/** Deterministic prompt ids inside the tiny vocabulary (256), avoiding the special ids 0-2. */
export function promptIds (length: number, seed = 1): number[] {
  return Array.from({ length }, (_, i) => 3 + ((i * 37 + seed * 101) % 250))
}
