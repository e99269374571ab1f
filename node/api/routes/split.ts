import type { PeerId } from '@libp2p/interface'
import { z } from 'zod'
import type { Permagent } from '../../../src/permagent.ts'
import { createLayerServer, INFER_PROTOCOL, openRoutedModel, type LayerServer } from '../../../src/split/index.ts'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const name = z.string().min(1).max(128)
const serveBody = z.object({
  model: name,
  start: z.number().int().min(0).max(100_000),
  end: z.number().int().min(1).max(100_000),
  maxSessions: z.number().int().min(1).max(1024).optional(),
  threads: z.number().int().min(1).max(256).optional()
}).strict()

const tokenIds = z.array(z.number().int().min(0).max(2 ** 31)).max(1 << 20)
const runBody = z.object({
  model: name,
  promptIds: tokenIds.optional(),
  prompt: z.string().max(1 << 20).optional(),
  maxTokens: z.number().int().min(0).max(1 << 20),
  sampling: z.object({
    temperature: z.number().min(0).max(100).optional(),
    topK: z.number().int().min(0).optional(),
    topP: z.number().min(0).max(1).optional(),
    repetitionPenalty: z.number().min(0).max(100).optional(),
    seed: z.number().int().min(0).max(2 ** 32 - 1).optional()
  }).strict().optional(),
  stopTokens: tokenIds.optional(),
  headLayers: z.number().int().min(1).max(100_000).optional(),
  tailLayers: z.number().int().min(1).max(100_000).optional(),
  quantization: z.enum(['none', 'f16', 'int8-block']).optional()
}).strict()

// one served span per node: the protocol has one handler
const served = new WeakMap<Permagent, { server: LayerServer, model: string, start: number, end: number }>()

/**
 * Connected peers that may serve layers: those identify says speak /permagent/infer/1.0.0 first,
 * then every other connected peer (a span started after we connected is only announced by an
 * identify push); probing drops the ones that do not answer the protocol.
 */
async function layerServerCandidates (node: Permagent): Promise<PeerId[]> {
  const known: PeerId[] = []
  const others: PeerId[] = []
  for (const peer of node.mesh.libp2p.getPeers()) {
    try {
      const info = await node.mesh.libp2p.peerStore.get(peer)
      if (info.protocols.includes(INFER_PROTOCOL)) { known.push(peer); continue }
    } catch {}
    others.push(peer)
  }
  return [...known, ...others]
}

/** Split inference through the daemon: serve a span of a stored model; generate over the mesh. */
export const splitRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/serve',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => {
      const b = parseBody(serveBody, body)
      if (b.end <= b.start) throw new PermagentError('ERR_INVALID_INPUT', `--layers ${b.start}-${b.end} is empty: the end must be after the start`)
      const previous = served.get(node)
      if (previous != null) {
        await previous.server.stop()
        served.delete(node)
      }
      const server = createLayerServer({
        libp2p: node.mesh.libp2p,
        dataDir: node.dataDir,
        model: b.model,
        layers: { start: b.start, end: b.end },
        logger: node.logger.child({ module: 'split' }),
        limits: b.maxSessions != null ? { maxSessions: b.maxSessions } : undefined,
        threads: b.threads
      })
      await server.start()
      served.set(node, { server, model: b.model, start: b.start, end: b.end })
      return { model: b.model, layers: { start: b.start, end: b.end }, stats: server.stats() }
    }
  },
  {
    method: 'GET',
    path: '/api/serve',
    handler: async ({ node }) => {
      const current = served.get(node)
      return { serving: current == null ? null : { model: current.model, layers: { start: current.start, end: current.end }, stats: current.server.stats() } }
    }
  },
  {
    method: 'POST',
    path: '/api/serve/stop',
    handler: async ({ node }) => {
      const current = served.get(node)
      if (current != null) {
        await current.server.stop()
        served.delete(node)
      }
      return { stopped: current != null }
    }
  },
  {
    method: 'POST',
    path: '/api/run/mesh',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(runBody, body)
      if ((b.promptIds == null) === (b.prompt == null)) throw new PermagentError('ERR_INVALID_INPUT', 'give a prompt or promptIds (not both)')
      const peers = await layerServerCandidates(node)
      if (peers.length === 0) throw new PermagentError('ERR_NO_ROUTE', 'this node has no connected peers; connect to peers that run `permagent serve MODEL --layers A-B`')
      const { model, route } = await openRoutedModel({
        libp2p: node.mesh.libp2p,
        dataDir: node.dataDir,
        name: b.model,
        headLayers: b.headLayers ?? 1,
        tailLayers: b.tailLayers ?? 1,
        quantization: b.quantization,
        peers,
        signal,
        logger: node.logger.child({ module: 'split' })
      })
      try {
        const result = await model.generate({
          ...(b.promptIds != null ? { promptIds: b.promptIds } : { prompt: b.prompt }),
          maxTokens: b.maxTokens,
          sampling: b.sampling,
          stopTokens: b.stopTokens,
          signal
        })
        return {
          tokens: result.tokens,
          text: result.text,
          promptTokens: result.promptTokens,
          finishReason: result.finishReason,
          prefillMs: result.prefillMs,
          decodeMs: result.decodeMs,
          failovers: result.failovers,
          route: route.chain.map((hop) => ({ start: hop.start, end: hop.end, peer: hop.peers[0]?.toString() }))
        }
      } finally {
        await model.close()
      }
    }
  }
]
