import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { openaiRoutes } from '../../node/api/routes/openai.ts'
import { startControlApi } from '../../node/api/server.ts'
import { importModel } from '../../src/model/index.ts'
import { createPermagent, type Permagent } from '../../src/permagent.ts'
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
