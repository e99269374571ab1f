import { z } from 'zod'
import { loadManifest } from '../../../src/model/index.ts'
import { planLivePool } from '../../../src/split/index.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const planBody = z.object({
  model: z.string().min(1).max(128),
  headLayers: z.number().int().min(1).max(100_000).optional(),
  tailLayers: z.number().int().min(1).max(100_000).optional(),
  /** Positions a session needs: servers that hold fewer are left out of the route (default 512). */
  maxLength: z.number().int().min(1).max(1 << 24).optional(),
  /** Deadline of the DHT lookup and of each record fetch and probe, ms. */
  timeoutMs: z.number().int().min(100).max(120_000).optional(),
  /** Measure this node's head and tail stages (loads their weights) instead of estimating them. */
  measureLocal: z.boolean().optional(),
  threads: z.number().int().min(1).max(256).optional()
}).strict()

/** `permagent model plan MODEL`: the live pool of a stored model's layer servers. */
export const planRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/model/plan',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(planBody, body)
      const manifest = await loadManifest(node.dataDir, b.model)
      const plan = await planLivePool(node.mesh.libp2p, node.dataDir, manifest, {
        headLayers: b.headLayers,
        tailLayers: b.tailLayers,
        maxLength: b.maxLength,
        timeoutMs: b.timeoutMs ?? 10_000,
        measureLocal: b.measureLocal,
        threads: b.threads,
        signal,
        logger: node.logger
      })
      return {
        model: b.model,
        dtype: manifest.dtype,
        quant: manifest.quant,
        ...plan,
        failed: plan.failed.map((f) => ({ peer: f.peer.toString(), code: f.code, message: f.message }))
      }
    }
  }
]
