import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { PeerId } from '@libp2p/interface'
import { LocalModel } from '../../src/inference/index.ts'
import { loadManifest } from '../../src/model/index.ts'
import { createLayerServer, MeshModel, openRoutedModel, planRoute, probeServers, type LayerServer, type ServerInfo } from '../../src/split/index.ts'
import { promptIds, splitWorld } from './fixtures.ts'

const fakePeer = (name: string): PeerId => ({ toString: () => name }) as unknown as PeerId

function server (name: string, start: number, end: number, rttMs: number, msPerLayer: number, extra: Partial<ServerInfo> = {}): ServerInfo {
  return { peer: fakePeer(name), start, end, rttMs, msPerLayer, maxLength: 2048, maxStepRows: 2048, freeSessions: 4, ...extra }
}

const names = (route: ReturnType<typeof planRoute>): string[][] => route.chain.map((hop) => hop.peers.map((p) => p.toString()))

test('planRoute takes the chain with the lowest round trips plus compute, and lists replacements per span', () => {
  const options = { layers: 10, headLayers: 1, tailLayers: 1 }
  // one far server for 1-9 (RTT 50) against three near ones (RTT 5 each): 3 x 5 + 8 x 1 < 50 + 8 x 1
  const far = server('far', 1, 9, 50, 1)
  const near = [server('a', 1, 4, 5, 1), server('b', 4, 7, 5, 1), server('c', 7, 9, 5, 1)]
  let route = planRoute([far, ...near], options)
  assert.deepEqual(names(route), [['a'], ['b'], ['c']])
  assert.equal(route.expectedMsPerToken, 23)
  // a slow middle server tips it the other way: 5 + 3 x 20 + 5 + 5 + 5 > 58
  route = planRoute([far, near[0], server('b', 4, 7, 5, 20), near[2]], options)
  assert.deepEqual(names(route), [['far']])
  assert.equal(route.expectedMsPerToken, 58)
  // per-hop overhead favours fewer hops
  route = planRoute([far, ...near], { ...options, hopOverheadMs: 20 })
  assert.deepEqual(names(route), [['far']])
  // replacements for the same span follow the chosen one, cheapest first; full or short servers are skipped
  route = planRoute([...near, server('b3', 4, 7, 9, 1), server('b2', 4, 7, 7, 1), server('full', 4, 7, 1, 1, { freeSessions: 0 }), server('short', 4, 7, 1, 1, { maxLength: 16 })], { ...options, maxLength: 64 })
  assert.deepEqual(names(route), [['a'], ['b', 'b2', 'b3'], ['c']])
  // spans that reach into the local head or tail are not usable; a gap means no route
  assert.throws(() => planRoute([server('x', 0, 4, 1, 1), near[1], near[2]], options), (err: { code?: string }) => err.code === 'ERR_NO_ROUTE')
  assert.throws(() => planRoute([near[0], near[2]], options), (err: { code?: string }) => err.code === 'ERR_NO_ROUTE')
})

test('probed servers report their spans and compute; the planned chain generates what the local model does', async () => {
  // node 1: 1-2, node 2: 2-3, node 3: 3-4, node 4: 1-3
  const world = await splitWorld([{ start: 1, end: 2 }, { start: 2, end: 3 }, { start: 3, end: 4 }, { start: 1, end: 3 }])
  const local = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1 })
  try {
    const manifest = await loadManifest(world.dataDir, world.model)
    const client = world.swarm.nodes[0].mesh.libp2p
    const peers = [1, 2, 3, 4].map((i) => world.peer(i))
    const probe = await probeServers(client, peers, manifest, { signal: AbortSignal.timeout(20_000) })
    assert.deepEqual(probe.failed, [])
    const bySpan = new Map(probe.servers.map((s) => [s.peer.toString(), `${s.start}-${s.end}`]))
    assert.deepEqual(peers.map((p) => bySpan.get(p.toString())), ['1-2', '2-3', '3-4', '1-3'])
    for (const s of probe.servers) {
      assert.ok(s.rttMs > 0 && s.msPerLayer > 0, `measured rtt ${s.rttMs} and compute ${s.msPerLayer}`)
      assert.equal(s.freeSessions, 16)
    }
    const route = planRoute(probe.servers, { layers: manifest.spec.numLayers, headLayers: 1, tailLayers: 1, maxLength: 64 })
    assert.equal(route.chain[0].start, 1)
    assert.equal(route.chain.at(-1)?.end, 4)
    const mesh = await MeshModel.open({ libp2p: client, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: route.chain, quantization: 'none', threads: 1 })
    try {
      const request = { promptIds: promptIds(12, 6), maxTokens: 16, stopTokens: [] }
      assert.deepEqual((await mesh.generate(request)).tokens, (await local.generate(request)).tokens)
    } finally {
      await mesh.close()
    }
    // the same in one call, with a peer that serves nothing among the candidates
    const routed = await openRoutedModel({ libp2p: client, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, peers: [...peers, world.peer(0)], quantization: 'none', threads: 1, maxLength: 64, timeouts: { dialMs: 5000, replyMs: 5000 } })
    try {
      assert.equal(routed.probe.servers.length, 4)
      assert.deepEqual(routed.probe.failed.map((f) => f.peer.toString()), [world.peer(0).toString()])
      const bounds = routed.route.chain.flatMap((h) => [h.start, h.end])
      assert.ok(bounds[0] === 1 && bounds.at(-1) === 4 && routed.route.chain.every((h, i) => i === 0 || h.start === routed.route.chain[i - 1].end), `the chain tiles 1-4: ${bounds.join(',')}`)
      const request = { promptIds: promptIds(9, 3), maxTokens: 10, stopTokens: [] }
      assert.deepEqual((await routed.model.generate(request)).tokens, (await local.generate(request)).tokens)
    } finally {
      await routed.model.close()
    }
    // another model's identity is refused at the probe
    const other = await probeServers(client, peers.slice(0, 1), { configSha256: manifest.configSha256, weightsSha256: '00'.repeat(32) })
    assert.deepEqual(other.failed.map((f) => f.code), ['ERR_WRONG_MODEL'])
  } finally {
    await local.close()
    await world.close()
  }
})

test('a server with acceptFrom refuses other peers with ERR_PEER_REFUSED; the client routes around it', async () => {
  const world = await splitWorld([], { extraNodes: 2 })
  const extra: LayerServer[] = []
  try {
    // node 1 and 2 both serve 1-4 (a 5-layer model: head 1, tail 1); node 1 admits nobody but node 2
    const admitted = world.peer(2).toString()
    for (const node of [1, 2]) {
      const server = createLayerServer({ libp2p: world.swarm.nodes[node].mesh.libp2p, dataDir: world.dataDir, model: world.model, layers: { start: 1, end: 4 }, threads: 1, acceptFrom: node === 1 ? (peer) => peer.toString() === admitted : undefined })
      await server.start()
      extra.push(server)
    }
    const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: [{ start: 1, end: 4, peers: [world.peer(1), world.peer(2)] }], quantization: 'none', threads: 1 })
    try {
      const result = await mesh.generate({ promptIds: promptIds(6), maxTokens: 4, stopTokens: [] })
      assert.deepEqual(result.failovers.map((f) => [f.code, f.to]), [['ERR_PEER_REFUSED', world.peer(2).toString()]])
      assert.equal(extra[0].stats().opened, 0)
    } finally {
      await mesh.close()
    }
  } finally {
    for (const server of extra) await server.stop()
    await world.close()
  }
})
