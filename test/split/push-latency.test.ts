import { test } from 'node:test'
import type { Libp2p, PeerId } from '@libp2p/interface'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { importModel } from '../../src/model/index.ts'
import { createSwarm } from '../../src/simulation/index.ts'
import { createLayerServer, MeshModel, type LayerServer } from '../../src/split/index.ts'
import { startDelayProxy, type DelayProxy } from '../../bench/lib/delay-proxy.ts'
import { tempDir, tinyCheckpoint } from '../model/fixtures.ts'
import { LAYERS, promptIds, SPANS } from './fixtures.ts'

// Per-token latency of a 3-hop chain, relayed and pushed, side by side on one swarm whose links
// are delayed: by the memory transport (a delay per chunk, in turn) and by loopback TCP through
// delay proxies (a propagation delay). Figures only (docs/split-inference.md "Push"): speed is
// never asserted.
const LATENCIES_MS = [0, 10, 25]
const TOKENS = 12

/** Relayed and push ms per token on this swarm (medians of alternating runs); both give the same tokens. */
async function compare (libp2p: Libp2p, peers: PeerId[], dataDir: string): Promise<{ relayed: number, push: number }> {
  const meshes: MeshModel[] = []
  try {
    const open = async (push: boolean): Promise<MeshModel> => {
      const mesh = await MeshModel.open({ libp2p, dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, chain: SPANS.map((span, i) => ({ ...span, peers: [peers[i]] })), quantization: 'f16', threads: 1, push })
      meshes.push(mesh)
      return mesh
    }
    const relayed = await open(false)
    const pushed = await open(true)
    const request = { promptIds: promptIds(8, 3), maxTokens: TOKENS, stopTokens: [] }
    // a warm-up each (streams dialed, sessions opened), then alternate so both see the same load
    await relayed.generate(request)
    await pushed.generate(request)
    const perToken = { relayed: [] as number[], push: [] as number[] }
    let tokens: number[] | null = null
    for (let round = 0; round < 3; round++) {
      for (const [name, mesh] of [['relayed', relayed], ['push', pushed]] as const) {
        const result = await mesh.generate(request)
        tokens ??= result.tokens
        assert.deepEqual(result.tokens, tokens, `${name} gives the same tokens`)
        if (name === 'push') assert.equal(result.push?.steps, TOKENS)
        // decode steps: every generated token after the first (the prompt step is prefill)
        perToken[name].push(result.decodeMs / (result.tokens.length - 1))
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    return { relayed: median(perToken.relayed), push: median(perToken.push) }
  } finally {
    for (const mesh of meshes) await mesh.close()
  }
}

test('per-token latency over 3 hops with injected link latency: relayed vs push (figures; outputs equal)', async (t) => {
  const dir = await tempDir('permagent-push-latency-')
  try {
    const dataDir = join(dir.path, 'data')
    await importModel(dataDir, { source: await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS }), name: 'tiny' })
    for (const latencyMs of LATENCIES_MS) {
      const swarm = await createSwarm({ nodes: 4, topology: 'full', latencyMs })
      const servers: LayerServer[] = []
      try {
        await swarm.connect()
        await swarm.waitForTopology({ timeoutMs: 20_000 })
        for (let i = 0; i < 3; i++) {
          const server = createLayerServer({ libp2p: swarm.nodes[i + 1].mesh.libp2p, dataDir, model: 'tiny', layers: SPANS[i], threads: 1 })
          await server.start()
          servers.push(server)
        }
        const figures = await compare(swarm.nodes[0].mesh.libp2p, servers.map((_, i) => swarm.nodes[i + 1].mesh.peerId), dataDir)
        t.diagnostic(`memory transport, link latency ${latencyMs} ms, 3 hops, f16: relayed ${figures.relayed.toFixed(1)} ms/token, push ${figures.push.toFixed(1)} ms/token`)
      } finally {
        for (const server of servers) await server.stop()
        await swarm.stop()
      }
    }
  } finally {
    await dir.cleanup()
  }
})

test('per-token latency over 3 hops on loopback TCP through delay proxies: relayed vs push (figures; outputs equal)', async (t) => {
  const dir = await tempDir('permagent-push-tcp-')
  try {
    const dataDir = join(dir.path, 'data')
    await importModel(dataDir, { source: await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS }), name: 'tiny' })
    for (const latencyMs of LATENCIES_MS.filter((ms) => ms > 0)) {
      // TCP nodes, never dialed directly: every link the chain uses goes through its own proxy
      const swarm = await createSwarm({ nodes: 4, nodeOptions: () => ({ network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false } }) })
      const servers: LayerServer[] = []
      const proxies: DelayProxy[] = []
      try {
        const port = (node: number): number => Number(swarm.nodes[node].mesh.libp2p.getMultiaddrs().map((a) => /\/tcp\/(\d+)/.exec(a.toString())?.[1]).find((p) => p !== undefined))
        // the client to each server, and each server to the next (the push legs)
        const links: Array<[number, number]> = [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]
        for (const [from, to] of links) {
          const proxy = await startDelayProxy(port(to), latencyMs)
          proxies.push(proxy)
          await swarm.nodes[from].mesh.connect(`/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${swarm.nodes[to].mesh.peerId.toString()}`)
        }
        for (let i = 0; i < 3; i++) {
          const server = createLayerServer({ libp2p: swarm.nodes[i + 1].mesh.libp2p, dataDir, model: 'tiny', layers: SPANS[i], threads: 1 })
          await server.start()
          servers.push(server)
        }
        const figures = await compare(swarm.nodes[0].mesh.libp2p, servers.map((_, i) => swarm.nodes[i + 1].mesh.peerId), dataDir)
        // the figures mean something only if no stream took a direct connection
        for (const [from, to] of links) {
          const remotePorts = swarm.nodes[from].mesh.libp2p.getConnections(swarm.nodes[to].mesh.peerId).map((c) => Number(/\/tcp\/(\d+)/.exec(c.remoteAddr.toString())?.[1]))
          assert.ok(remotePorts.length > 0 && remotePorts.every((p) => proxies.some((proxy) => proxy.port === p)), `link ${from}->${to} only through its proxy (${remotePorts.join(',')})`)
        }
        t.diagnostic(`TCP + delay proxies, one-way latency ${latencyMs} ms, 3 hops, f16: relayed ${figures.relayed.toFixed(1)} ms/token, push ${figures.push.toFixed(1)} ms/token (model: relayed = base + ${6 * latencyMs}, push = base + ${4 * latencyMs})`)
      } finally {
        for (const server of servers) await server.stop()
        await swarm.stop()
        for (const proxy of proxies) await proxy.close()
      }
    }
  } finally {
    await dir.cleanup()
  }
})
