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
  const swarmOptions = { nodes: options.nodes, topology: options.topology, k: options.k, seed: options.seed }
  const swarm = options.mode === 'memory' ? await createSwarm(swarmOptions) : await createProcessSwarm(swarmOptions)
  try {
    const started = performance.now()
    await swarm.connect()
    await swarm.waitForTopology({ timeoutMs: options.timeoutMs })
    const connected = performance.now()
    await swarm.waitForRoutingTables(1, { timeoutMs: options.timeoutMs })
    const tables = performance.now()
    const sizes = 'nodes' in swarm
      ? swarm.nodes.map((n) => ({ table: n.mesh.routingTableSize(), peers: n.mesh.peers().length }))
      : (await Promise.all(swarm.members.map(async (m) => await swarm.status(m.index)))).map((s) => ({ table: s.routingTableSize, peers: s.peers.length }))
    return {
      scenario: 'connect',
      mode: options.mode,
      nodes: options.nodes,
      topology: options.topology,
      edges: swarm.edges.length,
      startMs: started - t0,
      connectedMs: connected - started,
      routingTablesMs: tables - started,
      routingTable: spread(sizes.map((s) => s.table)),
      peersPerNode: spread(sizes.map((s) => s.peers))
    }
  } finally {
    await swarm.stop()
  }
}
