import { z } from 'zod'
import { MAX_CANARIES } from './split-options.ts'
import { INFERENCE_POLICIES, type InferencePolicy } from './types.ts'

/** Environment variable holding the remote API key (wins over providers.remote.apiKey in config.json). */
export const REMOTE_API_KEY_ENV = 'PERMAGENT_REMOTE_API_KEY'

/**
 * The `providers` section of config.json. Private by default: policy local-only, no remote URL;
 * unknown keys are refused like everywhere in the config.
 */
export const providerSettingsSchema = z.object({
  /** Policy of requests that name none. */
  policy: z.enum(INFERENCE_POLICIES as [InferencePolicy, ...InferencePolicy[]]).optional(),
  /** Team of team-mesh requests that name none. */
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 lowercase hex characters').optional(),
  /** Largest stored model (bytes) run whole in the daemon; larger ones need the mesh (default half the RAM). */
  localMaxModelBytes: z.number().int().min(0).max(2 ** 50).optional(),
  mesh: z.object({
    headLayers: z.number().int().min(1).max(100_000).optional(),
    tailLayers: z.number().int().min(1).max(100_000).optional(),
    activations: z.enum(['none', 'f16', 'int8-block']).optional(),
    /** Verification of mesh requests that do not ask themselves (default off): rate 0..1, canaries per hop. */
    verify: z.object({
      rate: z.number().min(0).max(1).optional(),
      canaries: z.number().int().min(0).max(MAX_CANARIES).optional()
    }).strict().optional()
  }).strict().optional(),
  remote: z.object({
    baseUrl: z.string().max(2048).regex(/^https?:\/\//, 'the remote base URL starts with http:// or https://'),
    /** Prefer the PERMAGENT_REMOTE_API_KEY environment variable: config.json may be copied around. */
    apiKey: z.string().min(1).max(4096).optional(),
    models: z.array(z.string().min(1).max(256)).max(1024).optional(),
    timeoutMs: z.number().int().min(100).max(3_600_000).optional(),
    maxResponseBytes: z.number().int().min(1024).max(1024 * 1024 * 1024).optional()
  }).strict().optional()
}).strict()

export type ProviderSettings = z.infer<typeof providerSettingsSchema>
