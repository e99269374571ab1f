import { z } from 'zod'
import { layerServerCandidates, openRoutedModel } from '../../../src/split/index.ts'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const name = z.string().min(1).max(128)
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

/** Generation over the mesh: head and tail here, the middle layers on connected layer servers. */
export const meshRunRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/run/mesh',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(runBody, body)
      if ((b.promptIds == null) === (b.prompt == null)) throw new PermagentError('ERR_INVALID_INPUT', 'give a prompt or promptIds (not both)')
      const peers = await layerServerCandidates(node.mesh.libp2p)
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
