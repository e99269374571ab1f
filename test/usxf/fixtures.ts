import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { importModel } from '../../src/model/index.ts'
import { LocalModel, type ModelSession } from '../../src/inference/index.ts'
import { createSwarm, type Swarm } from '../../src/simulation/index.ts'
import { createMigrationService, modelCatalog, type InboundEvent, type MigrationService } from '../../src/usxf/index.ts'
import { tempDir, tinyCheckpoint, type TempDir } from '../model/fixtures.ts'

export interface MigrationNode {
  model: LocalModel
  service: MigrationService
  events: InboundEvent[]
}

export interface MigrationWorld {
  dir: TempDir
  swarm: Swarm
  nodes: MigrationNode[]
  close: () => Promise<void>
}

/**
 * A model (the tiny synthetic one unless a checkpoint is given) imported once, and in-process nodes on the memory transport, each with the model
 * open (at its own context limit) and a migration service started.
 */
export async function migrationWorld (maxContexts: number[], options: { checkpoint?: string } = {}): Promise<MigrationWorld> {
  const dir = await tempDir('permagent-usxf-')
  const data = join(dir.path, 'data')
  await importModel(data, { source: options.checkpoint ?? await tinyCheckpoint(join(dir.path, 'ckpt')), name: 'tiny' })
  // each node gets its own migration service below, so the nodes' session hosts do not serve the protocol
  const swarm = await createSwarm({ nodes: maxContexts.length, topology: 'full', nodeOptions: () => ({ sessions: { acceptMigrations: false } }) })
  const nodes: MigrationNode[] = []
  try {
    await swarm.connect()
    await swarm.waitForTopology({ timeoutMs: 20_000 })
    for (let i = 0; i < maxContexts.length; i++) {
      // different stage splits on each node: migration re-maps layers onto the target's stages
      const model = await LocalModel.open({ dataDir: data, name: 'tiny', threads: 1, maxContext: maxContexts[i], splits: i === 1 ? [2] : i === 2 ? [1, 3] : [] })
      const events: InboundEvent[] = []
      const node = swarm.nodes[i]
      const service = createMigrationService({
        libp2p: node.mesh.libp2p,
        identity: node.identity,
        models: modelCatalog([model]),
        readTimeoutMs: 10_000,
        attachTimeoutMs: 60_000,
        onInbound: (event) => events.push(event)
      })
      await service.start()
      nodes.push({ model, service, events })
    }
  } catch (err) {
    await swarm.stop()
    await dir.cleanup()
    throw err
  }
  return {
    dir,
    swarm,
    nodes,
    close: async () => {
      for (const node of nodes) {
        await node.service.stop()
        await node.model.close()
      }
      await swarm.stop()
      await dir.cleanup()
    }
  }
}

/** Deterministic prompt ids inside the tiny vocabulary (256), avoiding the special ids 0-2. */
export function promptIds (length: number, seed = 1): number[] {
  return Array.from({ length }, (_, i) => 3 + ((i * 37 + seed * 101) % 250))
}

/** Greedy generation with no stop tokens: `count` tokens, the last one left unfed (pending). */
export async function generate (model: LocalModel, session: ModelSession, prompt: number[], count: number): Promise<number[]> {
  return (await model.generate({ promptIds: prompt, maxTokens: count, stopTokens: [] }, session)).tokens
}

/** SHA-256 over every cached key and value of a session (to prove it did not change). */
export function sessionDigest (session: ModelSession): string {
  const hash = createHash('sha256')
  for (const cache of session.caches) {
    hash.update(String(cache.length))
    for (let l = cache.layerStart; l < cache.layerEnd; l++) {
      const { keys, values } = cache.layer(l)
      hash.update(new Uint8Array(keys.buffer, keys.byteOffset, keys.byteLength))
      hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
    }
  }
  hash.update(JSON.stringify(session.tokens))
  return hash.digest('hex')
}
