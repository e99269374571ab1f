export { createSwarm, type Swarm, type SwarmOptions } from './swarm.ts'
export { topologyEdges, seededRandom, TOPOLOGY_KINDS, type TopologyKind } from './topology.ts'
export { waitUntil, type WaitUntilOptions } from './wait.ts'
export { createProcessSwarm, type ProcessSwarm, type ProcessSwarmOptions, type ProcessMember } from './process-swarm.ts'
