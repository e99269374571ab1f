import { z } from 'zod'
import { PROVIDER_ERRORS, ProviderError } from '../../../src/providers/index.ts'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'
import { withNodeProviders } from './openai.ts'

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
  quantization: z.enum(['none', 'f16', 'int8-block']).optional(),
  /** Who may serve: mesh (any admitted peer, default) or team-mesh (current members of `team` only). */
  policy: z.enum(['local-only', 'team-mesh', 'mesh', 'cloud-allowed']).optional(),
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 lowercase hex characters').optional(),
  /** Verification: per hop, the fraction of steps re-checked on a second server (0..1; default providers.mesh.verify); canaries too when > 0. */
  verify: z.number().min(0).max(1).optional(),
  /** Servers push activations to the next server instead of back through this node (docs/split-inference.md, Push). */
  push: z.boolean().optional()
}).strict()

/**
 * Generation over the mesh: head and tail here, the middle layers on layer servers (connected, or
 * named by the DHT). It goes through the node's mesh provider (the one the OpenAI API uses, with
 * config.json's `providers.mesh` defaults); the body's layers, activations and verification are
 * the request's split options, and the verification report comes back in the provider's route.
 */
export const meshRunRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/run/mesh',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(runBody, body)
      if ((b.promptIds == null) === (b.prompt == null)) throw new PermagentError('ERR_INVALID_INPUT', 'give a prompt or promptIds (not both)')
      // a team means team-mesh; local-only forbids sending activations at all
      const policy = b.policy ?? (b.team != null ? 'team-mesh' : 'mesh')
      if (policy === 'local-only') throw new ProviderError(PROVIDER_ERRORS.policyRefused, 'a mesh run sends activations to peers; policy local-only does not allow it')
      if (policy === 'team-mesh' && b.team == null) throw new PermagentError('ERR_INVALID_INPUT', 'policy team-mesh needs a team')
      const result = await withNodeProviders(node, async (resolver) => {
        const provider = resolver.meshProvider(policy === 'team-mesh' ? b.team : undefined)
        if (provider === undefined) throw new ProviderError(PROVIDER_ERRORS.noProvider, 'this node has no mesh provider')
        return await provider.generate({
          model: b.model,
          ...(b.promptIds != null ? { promptIds: b.promptIds } : { prompt: b.prompt }),
          maxTokens: b.maxTokens,
          sampling: b.sampling,
          stopTokens: b.stopTokens,
          split: {
            headLayers: b.headLayers,
            tailLayers: b.tailLayers,
            quantization: b.quantization,
            push: b.push,
            // a rate alone: canaries as configured, else 2 when the rate is above 0
            ...(b.verify != null ? { verify: { rate: b.verify } } : {})
          }
        }, signal)
      })
      const { route } = result
      return {
        tokens: result.tokens,
        text: result.text,
        promptTokens: result.promptIds,
        finishReason: result.finishReason,
        prefillMs: result.prefillMs,
        decodeMs: result.decodeMs,
        failovers: route.failovers,
        handoffs: route.handoffs,
        ...(route.push != null ? { push: route.push } : {}),
        route: route.hops,
        provider: route.provider,
        privacy: route.privacy,
        ...(route.team != null ? { team: route.team } : {}),
        ...(route.verification != null ? { faults: route.faults ?? route.verification.faults, verification: route.verification } : {})
      }
    }
  }
]
