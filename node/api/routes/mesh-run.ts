import { z } from 'zod'
import { createMeshProvider, createPeerAdmission, PROVIDER_ERRORS, ProviderError } from '../../../src/providers/index.ts'
import { storedModelCandidates, type VerificationReport } from '../../../src/split/index.ts'
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
  quantization: z.enum(['none', 'f16', 'int8-block']).optional(),
  /** Who may serve: mesh (any admitted peer, default) or team-mesh (current members of `team` only). */
  policy: z.enum(['local-only', 'team-mesh', 'mesh', 'cloud-allowed']).optional(),
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 lowercase hex characters').optional(),
  /** Verification: per hop, the fraction of steps re-checked on a second server (0..1); canaries too when > 0. */
  verify: z.number().min(0).max(1).optional()
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
      // a team means team-mesh; local-only forbids sending activations at all
      const policy = b.policy ?? (b.team != null ? 'team-mesh' : 'mesh')
      if (policy === 'local-only') throw new ProviderError(PROVIDER_ERRORS.policyRefused, 'a mesh run sends activations to peers; policy local-only does not allow it')
      if (policy === 'team-mesh' && b.team == null) throw new PermagentError('ERR_INVALID_INPUT', 'policy team-mesh needs a team')
      let verification: (VerificationReport & { regenerated: number }) | undefined
      const provider = createMeshProvider({
        libp2p: node.mesh.libp2p,
        dataDir: node.dataDir,
        admission: createPeerAdmission({ nodeGater: node.mesh.gater, team: policy === 'team-mesh' && b.team != null ? { id: b.team, membership: node.team } : undefined }),
        // connected peers and the model's servers announced on the DHT (src/split/discover.ts)
        candidates: async () => await storedModelCandidates(node.mesh.libp2p, node.dataDir, b.model, { signal, timeoutMs: 10_000, logger: node.logger }),
        headLayers: b.headLayers,
        tailLayers: b.tailLayers,
        quantization: b.quantization,
        routing: b.verify != null && b.verify > 0 ? { verify: { rate: b.verify, canaries: true, onReport: (report) => { verification = report } } } : undefined,
        logger: node.logger.child({ module: 'split' })
      })
      const result = await provider.generate({
        model: b.model,
        ...(b.promptIds != null ? { promptIds: b.promptIds } : { prompt: b.prompt }),
        maxTokens: b.maxTokens,
        sampling: b.sampling,
        stopTokens: b.stopTokens
      }, signal)
      return {
        tokens: result.tokens,
        text: result.text,
        promptTokens: result.promptIds,
        finishReason: result.finishReason,
        prefillMs: result.prefillMs,
        decodeMs: result.decodeMs,
        failovers: result.route.failovers,
        handoffs: result.route.handoffs,
        route: result.route.hops,
        provider: result.route.provider,
        privacy: result.route.privacy,
        ...(result.route.team != null ? { team: result.route.team } : {}),
        ...(verification != null ? { faults: verification.faults, verification } : {})
      }
    }
  }
]
