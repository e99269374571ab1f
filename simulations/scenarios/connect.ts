import { performance } from 'node:perf_hooks'
import { createProcessSwarm, createSwarm, type TopologyKind } from '../../src/simulation/index.ts'

export interface ConnectScenarioOptions {
  nodes: number
  topology: TopologyKind
  k: number
  seed: number
  mode: 'memory' | 'process'
  timeoutMs: number
}

export interface ConnectScenarioReport {
  scenario: 'connect'
  mode: 'memory' | 'process'
  nodes: number
  topology: TopologyKind
  edges: number
  startMs: number
  connectedMs: number
  routingTablesMs: number
  routingTable: { min: number, median: number, max: number }
  peersPerNode: { min: number, median: number, max: number }
}

function spread (values: number[]): { min: number, median: number, max: number } {
  const sorted = [...values].sort((a, b) => a - b)
  return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] }
}

/**
 * Starts N nodes, dials the topology, and measures (from the first dial) how long until every
 * topology edge is a live connection and every node's DHT routing table holds at least one peer.
 */
export async function runConnectScenario (options: ConnectScenarioOptions): Promise<ConnectScenarioReport> {
  const t0 = performance.now()
  if (options.mode === 'memory') {
    const swarm = await createSwarm({ nodes: options.nodes, topology: options.topology, k: options.k, seed: options.seed })
    try {
      const started = performance.now()
      await swarm.connect()
      await swarm.waitForTopology({ timeoutMs: options.timeoutMs })
      const connected = performance.now()
      await swarm.waitForRoutingTables(1, { timeoutMs: options.timeoutMs })
      const tables = performance.now()
      return {
        scenario: 'connect',
        mode: 'memory',
        nodes: options.nodes,
        topology: options.topology,
        edges: swarm.edges.length,
        startMs: started - t0,
        connectedMs: connected - started,
        routingTablesMs: tables - started,
        routingTable: spread(swarm.nodes.map((n) => n.mesh.routingTableSize())),
        peersPerNode: spread(swarm.nodes.map((n) => n.mesh.peers().length))
      }
    } finally {
      await swarm.stop()
    }
  }
  const swarm = await createProcessSwarm({ nodes: options.nodes, topology: options.topology, k: options.k, seed: options.seed })
  try {
    const started = performance.now()
    await swarm.connect()
    await swarm.waitForTopology({ timeoutMs: options.timeoutMs })
    const connected = performance.now()
    await swarm.waitForRoutingTables(1, { timeoutMs: options.timeoutMs })
    const tables = performance.now()
    const statuses = await Promise.all(swarm.members.map(async (m) => await swarm.status(m.index)))
    return {
      scenario: 'connect',
      mode: 'process',
      nodes: options.nodes,
      topology: options.topology,
      edges: swarm.edges.length,
      startMs: started - t0,
      connectedMs: connected - started,
      routingTablesMs: tables - started,
      routingTable: spread(statuses.map((s) => s.routingTableSize)),
      peersPerNode: spread(statuses.map((s) => s.peers.length))
    }
  } finally {
    await swarm.stop()
  }
}
