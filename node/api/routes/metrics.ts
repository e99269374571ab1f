import { collectDefaultMetrics, Gauge, Registry } from 'prom-client'
import type { Permagent } from '../../../src/permagent.ts'
import type { Route } from '../router.ts'

/**
 * Prometheus metrics of the node (text exposition format): process metrics plus mesh gauges read
 * at scrape time. Behind the same bearer token as every other route.
 */
export function createMetricsRoutes (): Route[] {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'permagent_process_' })
  let current: Permagent | undefined
  const gauge = (name: string, help: string, read: (node: Permagent) => number): void => {
    // eslint-disable-next-line no-new
    new Gauge({ name, help, registers: [registry], collect () { if (current != null) this.set(read(current)) } })
  }
  gauge('permagent_peers', 'connected peers', (node) => node.mesh.peers().length)
  gauge('permagent_connections', 'open libp2p connections', (node) => node.mesh.libp2p.getConnections().length)
  gauge('permagent_dht_routing_table_size', 'peers in the DHT routing table', (node) => node.mesh.routingTableSize())
  gauge('permagent_uptime_seconds', 'seconds since the node started', (node) => node.status().uptimeMs / 1000)
  return [{
    method: 'GET',
    path: '/api/metrics',
    handler: async ({ node, response }) => {
      current = node
      const text = await registry.metrics()
      response.writeHead(200, { 'content-type': registry.contentType })
      response.end(text)
      return undefined
    }
  }]
}
