import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { z } from 'zod'
import type { Permagent } from '../../../src/permagent.ts'
import type { DrainResult } from '../../../src/split/index.ts'
import type { DrainResult as HostedDrainResult } from '../../../src/usxf/index.ts'
import { InvalidInputError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'
import { servedLayerServer } from './split.ts'

const drainBody = z.object({
  /** The peer that takes the sessions. */
  to: z.string().min(1).max(128),
  /** How long the layer server waits for moved sessions' clients to come back and be told (ms). */
  clientWaitMs: z.number().int().min(0).max(600_000).optional()
}).strict()

/** What a drain did, per kind of session this node holds. */
export interface DrainReply {
  to: string
  /**
   * The split-inference layer server's live sessions, handed to `to` with no replay; then the node
   * stops serving its span (`stopped`). null when the node serves no span.
   */
  layerSessions: (DrainResult & { stopped: boolean }) | null
  /**
   * The daemon-hosted generation sessions (/api/sessions/*), migrated to `to` by USXF (forced, no
   * replay: caches attached and checked by the fidelity continuation); the node then takes no new sessions.
   */
  hostedSessions: HostedDrainResult
}

function parsePeer (value: string): PeerId {
  try {
    return peerIdFromString(value)
  } catch (err) {
    throw new InvalidInputError(`"${value.slice(0, 128)}" is not a peer id`, { cause: err })
  }
}

/** Hands the served span's sessions to `to`, then stops serving it (unless the request was abandoned meanwhile). */
async function drainLayerSessions (node: Permagent, to: PeerId, clientWaitMs: number | undefined, signal: AbortSignal): Promise<DrainReply['layerSessions']> {
  const served = servedLayerServer(node)
  if (served == null) return null
  const result = await served.server.drain(to, { identity: node.identity, signal, clientWaitMs })
  // sessions that could not move are dropped by the stop: their clients fail over by replay
  const stopped = signal.aborted ? false : await served.stopServing()
  return { ...result, stopped }
}

/** Draining a node before it goes away: every live session moves to another peer, none is replayed. */
export const drainRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/drain',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(drainBody, body)
      const to = parsePeer(b.to)
      if (to.equals(node.mesh.peerId)) throw new InvalidInputError('a node cannot drain into itself: give another peer\'s id')
      const reply: DrainReply = {
        to: to.toString(),
        layerSessions: await drainLayerSessions(node, to, b.clientWaitMs, signal),
        hostedSessions: await node.sessions.drain(to, { signal })
      }
      return reply
    }
  }
]
