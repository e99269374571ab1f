import { freemem } from 'node:os'
import type { PeerId } from '@libp2p/interface'
import { z } from 'zod'
import type { Permagent } from '../../../src/permagent.ts'
import { loadManifest } from '../../../src/model/index.ts'
import {
  chooseAutoSpan, createCapacityResponder, createLayerAnnouncer, createLayerServer, discoverModelServers, kvBytesPerPosition, layerWeightBytes,
  type AutoSpanChoice, type CapacityResponder, type LayerAnnouncer, type LayerServer
} from '../../../src/split/index.ts'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const name = z.string().min(1).max(128)
const serveBody = z.object({
  model: name,
  /** A span [start, end), or auto: the span the pool lacks most that fits memoryBytes. */
  start: z.number().int().min(0).max(100_000).optional(),
  end: z.number().int().min(1).max(100_000).optional(),
  auto: z.boolean().optional(),
  /** With auto: memory this node gives the span, bytes (default: free memory now). */
  memoryBytes: z.number().int().min(1).max(2 ** 52).optional(),
  /** With auto: serve at most this many layers. */
  maxLayers: z.number().int().min(1).max(100_000).optional(),
  maxSessions: z.number().int().min(1).max(1024).optional(),
  maxLength: z.number().int().min(1).max(1 << 24).optional(),
  threads: z.number().int().min(1).max(256).optional(),
  /** Take sessions (and give the capacity record) only to current members of this team. */
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 hex characters').optional(),
  /** DHT lookup deadline for auto, ms. */
  discoverMs: z.number().int().min(100).max(120_000).optional()
}).strict()

/** Defaults of createLayerServer, used to size the KV budget of an auto span. */
const DEFAULT_MAX_SESSIONS = 16
const DEFAULT_MAX_LENGTH = 2048

interface Served {
  server: LayerServer
  announcer: LayerAnnouncer
  model: string
  start: number
  end: number
  team: string | null
  auto: AutoSpanChoice | null
}

// one served span per node: the protocol has one handler
const served = new WeakMap<Permagent, Served>()
// one capacity responder per node, for as long as the node runs
const responders = new WeakMap<Permagent, CapacityResponder>()

async function responderOf (node: Permagent): Promise<CapacityResponder> {
  let responder = responders.get(node)
  if (responder == null) {
    responder = createCapacityResponder({ libp2p: node.mesh.libp2p, identity: node.identity, logger: node.logger.child({ module: 'split' }) })
    await responder.start()
    responders.set(node, responder)
  }
  return responder
}

async function stopServing (node: Permagent): Promise<boolean> {
  const current = served.get(node)
  if (current == null) return false
  served.delete(node)
  // withdraw first, so no client is sent to a server that is going away
  await current.announcer.stop()
  await current.server.stop()
  return true
}

function describe (current: Served): unknown {
  return {
    model: current.model,
    layers: { start: current.start, end: current.end },
    team: current.team,
    announced: { modelKey: current.announcer.keys.model.toString(), spanKey: current.announcer.keys.span.toString() },
    stats: current.server.stats()
  }
}

/**
 * Split inference through the daemon: serve a span of a stored model to peers (a fixed span or
 * `auto`), announced on the DHT with a signed capacity record, optionally to one team only.
 */
export const splitRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/serve',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(serveBody, body)
      const fixed = b.start != null || b.end != null
      if (b.auto === true && fixed) throw new PermagentError('ERR_INVALID_INPUT', 'give a span (start, end) or auto, not both')
      if (b.auto !== true && (b.start == null || b.end == null)) throw new PermagentError('ERR_INVALID_INPUT', 'give a span (start and end) or auto: true')
      if (b.auto !== true && (b.memoryBytes != null || b.maxLayers != null)) throw new PermagentError('ERR_INVALID_INPUT', 'memoryBytes and maxLayers size an auto span')
      if (fixed && (b.end as number) <= (b.start as number)) throw new PermagentError('ERR_INVALID_INPUT', `--layers ${b.start}-${b.end} is empty: the end must be after the start`)
      let acceptFrom: ((peer: PeerId) => boolean) | undefined
      if (b.team != null) {
        const teamId = b.team
        if (!node.team.teams().some((t) => t.teamId === teamId)) throw new PermagentError('ERR_UNKNOWN_TEAM', `this node is not in team ${teamId}`)
        // membership is read at each session open, so a member removed later is refused from then on
        acceptFrom = (peer) => node.team.isMember(teamId, peer)
      }
      await stopServing(node)
      let span = { start: b.start ?? 0, end: b.end ?? 0 }
      let auto: AutoSpanChoice | null = null
      if (b.auto === true) {
        const manifest = await loadManifest(node.dataDir, b.model)
        const pool = await discoverModelServers(node.mesh.libp2p, { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }, { signal, timeoutMs: b.discoverMs ?? 10_000, logger: node.logger })
        auto = chooseAutoSpan({
          numLayers: manifest.spec.numLayers,
          layerBytes: layerWeightBytes(manifest),
          kvBytesPerLayerPosition: kvBytesPerPosition(manifest.spec, 1),
          maxSessions: b.maxSessions ?? DEFAULT_MAX_SESSIONS,
          maxLength: Math.min(b.maxLength ?? DEFAULT_MAX_LENGTH, manifest.spec.maxPositions),
          memoryBytes: b.memoryBytes ?? freemem(),
          maxLayers: b.maxLayers,
          servers: pool.servers
        })
        span = { start: auto.start, end: auto.end }
      }
      const logger = node.logger.child({ module: 'split' })
      const server = createLayerServer({
        libp2p: node.mesh.libp2p,
        dataDir: node.dataDir,
        model: b.model,
        layers: span,
        logger,
        limits: { ...(b.maxSessions != null ? { maxSessions: b.maxSessions } : {}), ...(b.maxLength != null ? { maxLength: b.maxLength } : {}) },
        threads: b.threads,
        acceptFrom
      })
      await server.start()
      let announcer: LayerAnnouncer
      try {
        announcer = createLayerAnnouncer({ libp2p: node.mesh.libp2p, server, responder: await responderOf(node), logger, acceptFrom })
        await announcer.start()
      } catch (err) {
        await server.stop()
        throw err
      }
      const current: Served = { server, announcer, model: b.model, start: span.start, end: span.end, team: b.team ?? null, auto }
      served.set(node, current)
      return { ...(describe(current) as object), auto: auto == null ? null : { reason: auto.reason, memoryBytes: auto.memoryBytes, coverage: auto.coverage } }
    }
  },
  {
    method: 'GET',
    path: '/api/serve',
    handler: async ({ node }) => {
      const current = served.get(node)
      return { serving: current == null ? null : describe(current) }
    }
  },
  {
    method: 'POST',
    path: '/api/serve/stop',
    handler: async ({ node }) => ({ stopped: await stopServing(node) })
  }
]

/** The layer server this node serves now, and how to stop serving it (withdraw, then stop): for /api/drain. */
export function servedLayerServer (node: Permagent): { server: LayerServer, stopServing: () => Promise<boolean> } | null {
  const current = served.get(node)
  return current == null ? null : { server: current.server, stopServing: async () => await stopServing(node) }
}
