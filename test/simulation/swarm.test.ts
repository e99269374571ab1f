import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSwarm, topologyEdges } from '../../src/simulation/index.ts'

// An error thrown after a test ended (a stopping swarm once wrote to a closed stream, under load in
// CI) is reported by the runner without its stack; print the stack too. The file still fails.
process.on('uncaughtException', (err) => { process.stderr.write(`uncaught exception after a test: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`) })

test('topologies wire the expected edges', () => {
  assert.equal(topologyEdges('full', 5).length, 10)
  assert.equal(topologyEdges('ring', 5).length, 5)
  assert.equal(topologyEdges('star', 5).length, 4)
  assert.deepEqual(topologyEdges('random-k', 12, { k: 3, seed: 7 }), topologyEdges('random-k', 12, { k: 3, seed: 7 }))
  // random-k keeps a ring underneath, so every node has at least two neighbours
  const degree = new Array(12).fill(0)
  for (const [a, b] of topologyEdges('random-k', 12, { k: 3, seed: 7 })) { degree[a]++; degree[b]++ }
  assert.ok(degree.every((d) => d >= 3))
  assert.throws(() => topologyEdges('mesh' as never, 3), /unknown topology/)
})

test('a 20-node in-process swarm connects and every DHT routing table holds peers', async (t) => {
  const swarm = await createSwarm({ nodes: 20, topology: 'random-k', k: 3, seed: 42 })
  t.after(async () => { await swarm.stop() })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 30_000 })
  await swarm.waitForRoutingTables(1, { timeoutMs: 30_000 })
  for (const node of swarm.nodes) {
    assert.ok(node.mesh.routingTableSize() >= 1, `node ${node.identity.peerId.toString()} has an empty routing table`)
    assert.ok(node.status().peers.length >= 2)
  }
  const ids = new Set(swarm.nodes.map((n) => n.status().peerId))
  assert.equal(ids.size, 20)
})

test('a late joiner connects to a running swarm', async (t) => {
  const swarm = await createSwarm({ nodes: 3, topology: 'ring' })
  t.after(async () => { await swarm.stop() })
  await swarm.connect()
  const late = await swarm.addNode()
  await late.mesh.connect(swarm.nodes[0].mesh.addresses()[0])
  assert.equal(late.status().peers[0].peerId, swarm.nodes[0].status().peerId)
})
