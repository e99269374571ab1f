import { z } from 'zod'
import { parseMultiaddr } from '../../../src/mesh/index.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const connectBody = z.object({ multiaddr: z.string().min(1).max(1024) }).strict()

/** Node-level routes: status, peers, connect, stop. */
export const nodeRoutes: Route[] = [
  {
    method: 'GET',
    path: '/api/status',
    handler: async ({ node }) => node.status()
  },
  {
    method: 'GET',
    path: '/api/peers',
    handler: async ({ node }) => ({ peers: node.mesh.peers() })
  },
  {
    method: 'POST',
    path: '/api/connect',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => {
      const { multiaddr } = parseBody(connectBody, body)
      const peerId = await node.mesh.connect(parseMultiaddr(multiaddr), { signal })
      return { peerId: peerId.toString() }
    }
  },
  {
    method: 'POST',
    path: '/api/stop',
    handler: async ({ requestShutdown }) => {
      requestShutdown()
      return { stopping: true }
    }
  }
]
