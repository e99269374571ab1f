import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI from 'openai'
import type { PeerId } from '@libp2p/interface'
import { openaiRoutes } from '../../node/api/routes/openai.ts'
import { meshRunRoutes } from '../../node/api/routes/mesh-run.ts'
import { startControlApi, type ControlApi } from '../../node/api/server.ts'
import { LocalModel } from '../../src/inference/index.ts'
import { importModel, loadManifest } from '../../src/model/index.ts'
import { createMeshProvider, createNodeProviders, createPeerAdmission, type InferenceProvider, type RouteReport } from '../../src/providers/index.ts'
import { createSwarm, type Swarm } from '../../src/simulation/index.ts'
import { createLayerServer, type LayerServer } from '../../src/split/index.ts'
import { PermagentError, silentLogger } from '../../src/util/index.ts'
import { tempDir, type TempDir } from '../model/fixtures.ts'
import { tinyModelSource } from './fixtures.ts'
import { startLiarProxy } from '../split/liar-proxy.ts'

/**
 * Node 0 is the client; nodes 1, 2 and 3 serve layers 1-2, 2-3 and 3-4 honestly; node 4 serves
 * 2-3 too, but only as the backend of node 5, a test-only proxy that forwards sessions to it and
 * perturbs every result (the liar). The client's connection policy refuses node 4, so layers 2-3
 * have two servers for it: the honest node 2 and the liar. Verification at rate 1 compares them
 * at every step, whichever of the two routing makes the primary.
 */
const CLIENT = 0
const HONEST = 2
const BACKEND = 4
const LIAR = 5
const SERVES: Record<number, { start: number, end: number }> = { 1: { start: 1, end: 2 }, 2: { start: 2, end: 3 }, 3: { start: 3, end: 4 }, 4: { start: 2, end: 3 } }

let dir: TempDir
let dataDir: string
let swarm: Swarm
let local: LocalModel
let liar: { lies: () => number }
const servers: LayerServer[] = []
const prompt = [5, 9, 17, 33, 65, 129, 200, 7]

const peer = (node: number): PeerId => swarm.nodes[node].mesh.peerId
const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)

before(async () => {
  dir = await tempDir('permagent-verify-mesh-')
  swarm = await createSwarm({ nodes: 6, topology: 'full' })
  dataDir = swarm.nodes[CLIENT].dataDir
  await importModel(dataDir, { source: await tinyModelSource(dir.path), name: 'tiny' })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 20_000 })
  for (const node of [1, 2, 3, 4]) {
    const server = createLayerServer({ libp2p: swarm.nodes[node].mesh.libp2p, dataDir, model: 'tiny', layers: SERVES[node], threads: 1 })
    await server.start()
    servers.push(server)
  }
  const hidden = (await loadManifest(dataDir, 'tiny')).spec.hiddenSize
  liar = await startLiarProxy(swarm.nodes[LIAR].mesh.libp2p, peer(BACKEND), hidden)
  // the client never uses the backend itself: its only way to layers 2-3 besides node 2 is the liar
  const backend = peer(BACKEND)
  swarm.nodes[CLIENT].mesh.gater.setRule('test-hide-liar-backend', (p) => !p.equals(backend))
  local = await LocalModel.open({ dataDir, name: 'tiny', threads: 1 })
})

after(async () => {
  await local?.close()
  for (const server of servers) await server.stop()
  await swarm?.stop()
  await dir?.cleanup()
})

/** The route's verification of the one liar: caught, named, and what it was caught on. */
function assertLiarCaught (route: RouteReport): void {
  assert.ok(route.verification !== undefined, 'the route carries the verification report')
  assert.equal(route.faults?.length, 1, JSON.stringify(route.faults))
  const [fault] = route.faults
  assert.equal(fault.peer, peer(LIAR).toString())
  assert.deepEqual([fault.start, fault.end], [2, 3])
  // as the primary it is caught on a step (or by a canary); as the second server, as a verifier
  assert.ok(['step', 'canary', 'verifier'].includes(fault.kind), fault.kind)
  assert.equal(fault.referee, 'local')
  assert.ok(fault.ratio > 1)
  assert.deepEqual(route.verification.faults, route.faults)
  const [first, middle, last] = route.verification.hops
  // a canary before the prompt may catch it first; then node 2 serves alone and its checks are unavailable
  assert.ok(middle.checks > 0 || fault.kind === 'canary', `layers 2-3 were checked: ${JSON.stringify(middle)}`)
  // layers 1-2 and 3-4 have one server each: every due check is reported unavailable
  assert.ok(first.unavailable > 0 && first.checks === 0)
  assert.ok(last.unavailable > 0 && last.checks === 0)
}

/** A later request of the same provider (or node): the liar is not even asked, and the route says why. */
function assertLiarExcluded (route: RouteReport): void {
  assert.deepEqual(route.excluded?.map((e) => [e.peer, e.start, e.end]), [[peer(LIAR).toString(), 2, 3]])
  assert.ok(route.hops?.every((hop) => hop.peer !== peer(LIAR).toString()))
  if (route.verification !== undefined) assert.deepEqual(route.faults, [])
}

test('the mesh provider verifies per request: the liar is reported in the route with its faults; the output equals local', async () => {
  const client = swarm.nodes[CLIENT]
  const provider: InferenceProvider = createMeshProvider({
    libp2p: client.mesh.libp2p,
    dataDir,
    admission: createPeerAdmission({ nodeGater: client.mesh.gater }),
    quantization: 'none',
    threads: 1
  })
  const expected = await local.generate({ promptIds: prompt, maxTokens: 12, stopTokens: [] })
  const liesBefore = liar.lies()
  const result = await provider.generate({ model: 'tiny', promptIds: prompt, maxTokens: 12, stopTokens: [], split: { verify: { rate: 1, canaries: 2 } } })
  assert.deepEqual(result.tokens, expected.tokens)
  assert.ok(liar.lies() > liesBefore, 'the liar was asked and lied')
  assertLiarCaught(result.route)
  assert.ok(result.route.verification?.hops.every((h) => h.canaries + h.canariesUnavailable === 2), 'two canaries per hop')
  assert.equal(result.route.verification?.suspectFrom, null)
  // a liar on the primary's seat fails over with ERR_SERVER_FAULTY; a lying verifier is only replaced
  for (const failover of result.route.failovers ?? []) assert.deepEqual([failover.from, failover.code], [peer(LIAR).toString(), 'ERR_SERVER_FAULTY'])

  // the next request, not verified: the liar caught before is not used, and no report but the exclusion
  const liesThen = liar.lies()
  const plain = await provider.generate({ model: 'tiny', promptIds: prompt, maxTokens: 4, stopTokens: [] })
  assert.equal(plain.route.verification, undefined)
  assert.equal(plain.route.faults, undefined)
  assertLiarExcluded(plain.route)
  assert.equal(liar.lies(), liesThen)
  assert.deepEqual(plain.tokens, expected.tokens.slice(0, 4))
})

test('config defaults: providers.mesh.verify applies to requests that do not ask; a request asking rate 0 turns it off', async () => {
  const resolver = createNodeProviders({ node: swarm.nodes[CLIENT], settings: { mesh: { activations: 'none', verify: { rate: 1, canaries: 0 } } }, env: {} })
  try {
    const expected = await local.generate({ promptIds: prompt, maxTokens: 10, stopTokens: [] })
    const result = await resolver.generate({ model: 'mesh/tiny', promptIds: prompt, maxTokens: 10, stopTokens: [], policy: 'mesh' })
    assert.deepEqual(result.tokens, expected.tokens)
    assertLiarCaught(result.route)
    assert.equal(result.route.verification?.rate, 1)
    assert.ok(result.route.verification?.hops.every((h) => h.canaries === 0), 'canaries 0 as configured')
    const off = await resolver.generate({ model: 'mesh/tiny', promptIds: prompt, maxTokens: 4, stopTokens: [], policy: 'mesh', split: { verify: { rate: 0 } } })
    assert.equal(off.route.verification, undefined)
    // the node's mesh providers share what was caught
    assertLiarExcluded(off.route)
  } finally {
    await resolver.close()
  }
})

test('a request that asks for verification is never answered by a remote API', async () => {
  const resolver = createNodeProviders({ node: swarm.nodes[CLIENT], settings: { localMaxModelBytes: 1, remote: { baseUrl: 'http://127.0.0.1:9/v1', models: ['tiny'] } }, env: {} })
  try {
    await assert.rejects(resolver.generate({ model: 'remote/tiny', prompt: 'hello', maxTokens: 2, policy: 'cloud-allowed', split: { verify: { rate: 0.5 } } }), (err: unknown) => {
      assert.ok(err instanceof PermagentError)
      assert.equal(err.code, 'ERR_NO_PROVIDER')
      assert.match(err.message, /remote: the request asks for verification; a remote API's answers cannot be checked/)
      return true
    })
  } finally {
    await resolver.close()
  }
})

test('mesh model listing: reused within its cache time, asked again after it; a lookup that hangs is cut off by the deadline', async (t) => {
  const client = swarm.nodes[CLIENT]
  let lookups = 0
  const make = (listCacheMs: number, hang = false): InferenceProvider => createMeshProvider({
    libp2p: client.mesh.libp2p,
    dataDir,
    admission: createPeerAdmission({ nodeGater: client.mesh.gater }),
    candidates: async (_model, signal) => {
      lookups++
      if (hang) {
        // a DHT lookup that never ends: only the listing's deadline stops it
        await new Promise((_resolve, reject) => { signal?.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
      }
      return [1, 2, 3].map(peer)
    },
    listCacheMs,
    listTimeoutMs: 500
  })
  const cached = make(60_000)
  const started = performance.now()
  assert.deepEqual((await cached.models()).map((m) => m.id), ['tiny'])
  const probed = performance.now()
  assert.deepEqual((await cached.models()).map((m) => m.id), ['tiny'])
  t.diagnostic(`listing with probes of 3 servers: ${(probed - started).toFixed(1)} ms; from the cache: ${(performance.now() - probed).toFixed(2)} ms`)
  assert.equal(lookups, 1, 'the second listing came from the cache')
  const fresh = make(0)
  await fresh.models()
  await fresh.models()
  assert.equal(lookups, 3, 'without a cache every listing looks servers up')
  assert.deepEqual(await make(0, true).models(), [], 'a model whose lookup ran past the deadline is not listed')
})

test('the OpenAI API with the official client: x-permagent-verify and permagent.verify, faults in headers, body and the final stream chunk', async () => {
  const client = swarm.nodes[CLIENT]
  const config = join(client.dataDir, 'config.json')
  await writeFile(config, JSON.stringify({ providers: { mesh: { activations: 'none' } } }))
  const api: ControlApi = await startControlApi({ node: client, token: 't0ken', port: 0, routes: [...openaiRoutes, ...meshRunRoutes], logger: silentLogger(), onShutdownRequested: () => {} })
  try {
    const openai = new OpenAI({ apiKey: 't0ken', baseURL: `${api.url}/v1`, maxRetries: 0 })
    const expected = await openai.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 8, temperature: 0 })

    // the header: a rate
    const byHeader = await openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 8, temperature: 0 }, { headers: { 'x-permagent-policy': 'mesh', 'x-permagent-verify': '1' } }).withResponse()
    assert.equal(byHeader.data.choices[0].text, expected.choices[0].text)
    assert.equal(byHeader.response.headers.get('x-permagent-verify'), '1')
    assert.equal(byHeader.response.headers.get('x-permagent-faults'), '1')
    const route = (byHeader.data as unknown as { permagent: RouteReport }).permagent
    assertLiarCaught(route)
    assert.equal(byHeader.response.headers.get('x-permagent-checks'), String(sum(route.verification?.hops.map((h) => h.checks) ?? [])))
    assert.equal(byHeader.response.headers.get('x-permagent-verify-unavailable'), String(sum(route.verification?.hops.map((h) => h.unavailable) ?? [])))

    // the body, streamed: the final chunk carries the report
    const messages = [{ role: 'user' as const, content: 'say something' }]
    const localChat = await openai.chat.completions.create({ model: 'tiny', messages, max_tokens: 6, temperature: 0 })
    const stream = await openai.chat.completions.create({ model: 'mesh/tiny', messages, max_tokens: 6, temperature: 0, stream: true, permagent: { policy: 'mesh', verify: { rate: 1, canaries: 0 } } } as any) as unknown as AsyncIterable<{ choices: Array<{ delta?: { content?: string }, finish_reason?: string | null }>, permagent?: RouteReport }>
    let text = ''
    let final: RouteReport | undefined
    for await (const part of stream) {
      text += part.choices[0]?.delta?.content ?? ''
      if (part.choices[0]?.finish_reason != null) final = part.permagent
    }
    assert.equal(text, localChat.choices[0].message.content)
    assert.ok(final !== undefined)
    // the liar, caught by the request before, is excluded: no fault, layers 2-3 left with one server
    assertLiarExcluded(final)
    assert.equal(final.verification?.rate, 1)
    assert.ok(final.verification?.hops.every((h) => h.canaries === 0 && h.checks === 0 && h.unavailable > 0), JSON.stringify(final.verification?.hops))

    // verification off: no report, no verification headers
    const plain = await openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 4, temperature: 0 }, { headers: { 'x-permagent-policy': 'mesh', 'x-permagent-verify': '0' } }).withResponse()
    assert.equal(plain.response.headers.get('x-permagent-faults'), null)
    assert.equal((plain.data as unknown as { permagent: RouteReport }).permagent.verification, undefined)
    assertLiarExcluded((plain.data as unknown as { permagent: RouteReport }).permagent)

    // bad input is refused at the boundary
    await assert.rejects(openai.completions.create({ model: 'mesh/tiny', prompt: 'x', max_tokens: 1 }, { headers: { 'x-permagent-policy': 'mesh', 'x-permagent-verify': '1.5' } }), (err: unknown) => err instanceof OpenAI.BadRequestError && /x-permagent-verify header is a fraction of steps in 0\.\.1/.test(err.message))
    await assert.rejects(openai.completions.create({ model: 'mesh/tiny', prompt: 'x', max_tokens: 1, permagent: { policy: 'mesh', verify: { rate: 1, canaries: 65 } } } as any), (err: unknown) => err instanceof OpenAI.BadRequestError && /canaries/.test(err.message))

    // the config is read on each request: a verify default applies at once (new settings, new
    // providers: the liar is tried again and caught again); an invalid edit names the field.
    // POST /api/run/mesh uses the same settings: verified by default, the same JSON fields as before
    await writeFile(config, JSON.stringify({ providers: { mesh: { activations: 'none', verify: { rate: 1 } } } }))
    const run = await fetch(`${api.url}/api/run/mesh`, { method: 'POST', headers: { authorization: 'Bearer t0ken', 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny', promptIds: prompt, maxTokens: 6, stopTokens: [] }) })
    const json = await run.json() as { tokens: number[], faults: Array<{ peer: string }>, verification: { rate: number, faults: unknown[] } }
    assert.equal(run.status, 200, JSON.stringify(json))
    assert.deepEqual(json.tokens, (await local.generate({ promptIds: prompt, maxTokens: 6, stopTokens: [] })).tokens)
    assert.deepEqual(json.faults.map((f) => f.peer), [peer(LIAR).toString()])
    assert.equal(json.verification.rate, 1)
    assert.deepEqual(json.verification.faults, json.faults)
    const configured = await openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 4, temperature: 0 }, { headers: { 'x-permagent-policy': 'mesh' } }).withResponse()
    assert.equal(configured.response.headers.get('x-permagent-verify'), '1')
    assert.equal(configured.response.headers.get('x-permagent-faults'), '0')
    assertLiarExcluded((configured.data as unknown as { permagent: RouteReport }).permagent)

    await writeFile(config, JSON.stringify({ providers: { mesh: { verify: { rate: 2 } } } }))
    await assert.rejects(openai.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 1 }), (err: unknown) => err instanceof OpenAI.BadRequestError && /providers\.mesh\.verify\.rate/.test(err.message))
  } finally {
    await rm(config, { force: true })
    await api.stop()
  }
})
