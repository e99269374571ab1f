import { z } from 'zod'
import type { Permagent } from '../../../src/permagent.ts'
import { createLayerServer, type LayerServer } from '../../../src/split/index.ts'
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

// one served span per node: the protocol has one handler
const served = new WeakMap<Permagent, { server: LayerServer, model: string, start: number, end: number }>()

/** Split inference through the daemon: serve a span of a stored model to peers. */
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
  }
]
