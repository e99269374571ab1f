import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { meshRunRoutes } from '../../node/api/routes/mesh-run.ts'
import { startControlApi } from '../../node/api/server.ts'
import { LocalModel } from '../../src/inference/index.ts'
import { importModel } from '../../src/model/index.ts'
import { admittedLibp2p, createMeshProvider, createNodeProviders, createPeerAdmission, NoProviderError, type InferenceProvider } from '../../src/providers/index.ts'
import { createSwarm, waitUntil, type Swarm } from '../../src/simulation/index.ts'
import { createLayerServer, MeshModel, type LayerServer } from '../../src/split/index.ts'
import { PermagentError, silentLogger } from '../../src/util/index.ts'
import { tempDir, type TempDir } from '../model/fixtures.ts'
import { formTeam } from '../team/helpers.ts'
import { startOpenAiNode, tinyModelSource } from './fixtures.ts'

/**
 * Node 0 is the client and created the team; nodes 1, 3, 4 are members serving layers 1-2, 2-3
 * and 3-4; node 2 serves 2-3 too but is not a member.
 */
const CLIENT = 0
const NON_MEMBER = 2
const SERVES: Record<number, { start: number, end: number }> = { 1: { start: 1, end: 2 }, 2: { start: 2, end: 3 }, 3: { start: 2, end: 3 }, 4: { start: 3, end: 4 } }

let dir: TempDir
let dataDir: string
let source: string
let swarm: Swarm
let teamId: string
let local: LocalModel
const servers = new Map<number, LayerServer>()
const prompt = [5, 9, 17, 33, 65, 129, 200, 7]

async function serve (node: number): Promise<void> {
  const server = createLayerServer({ libp2p: swarm.nodes[node].mesh.libp2p, dataDir, model: 'tiny', layers: SERVES[node], threads: 1 })
  await server.start()
  servers.set(node, server)
}

async function stopServing (node: number): Promise<void> {
  await servers.get(node)?.stop()
  servers.delete(node)
}

const peer = (node: number): string => swarm.nodes[node].mesh.peerId.toString()
const opened = (node: number): number => servers.get(node)?.stats().opened ?? 0

/** Error codes along the cause chain, outermost first. */
function causes (err: unknown): string[] {
  const codes: string[] = []
  for (let at = err; at instanceof Error; at = at.cause) codes.push(at instanceof PermagentError ? at.code : at.name)
  return codes
}

/** A mesh provider on the client: team-mesh for the team, or plain mesh. */
function meshProvider (team: string | undefined): InferenceProvider {
  const client = swarm.nodes[CLIENT]
  return createMeshProvider({
    libp2p: client.mesh.libp2p,
    dataDir,
    admission: createPeerAdmission({ nodeGater: client.mesh.gater, team: team !== undefined ? { id: team, membership: client.team } : undefined }),
    quantization: 'none',
    threads: 1
  })
}

before(async () => {
  dir = await tempDir('permagent-team-mesh-')
  swarm = await createSwarm({ nodes: 5, topology: 'full' })
  // the client's own store; the servers read the same files
  dataDir = swarm.nodes[CLIENT].dataDir
  source = await tinyModelSource(dir.path)
  await importModel(dataDir, { source, name: 'tiny' })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 20_000 })
  teamId = await formTeam([0, 1, 3, 4].map((i) => swarm.nodes[i].team))
  const client = swarm.nodes[CLIENT]
  await waitUntil(() => [1, 3, 4].every((i) => client.team.isMember(teamId, swarm.nodes[i].mesh.peerId)), { timeoutMs: 20_000, what: 'the client knowing every member' })
  assert.equal(client.team.isMember(teamId, swarm.nodes[NON_MEMBER].mesh.peerId), false)
  for (const node of [1, 2, 3, 4]) await serve(node)
  local = await LocalModel.open({ dataDir, name: 'tiny', threads: 1 })
})

after(async () => {
  await local?.close()
  for (const node of [...servers.keys()]) await stopServing(node)
  await swarm?.stop()
  await dir?.cleanup()
})

test('team-mesh: the non-member\'s span is served by a member; tokens equal local generation; the route says team-mesh', async () => {
  const expected = await local.generate({ promptIds: prompt, maxTokens: 16, stopTokens: [] })
  const result = await meshProvider(teamId).generate({ model: 'tiny', promptIds: prompt, maxTokens: 16, stopTokens: [] })
  assert.deepEqual(result.tokens, expected.tokens)
  assert.equal(result.route.privacy, 'team-mesh')
  assert.equal(result.route.team, teamId)
  assert.deepEqual(result.route.hops, [{ start: 1, end: 2, peer: peer(1) }, { start: 2, end: 3, peer: peer(3) }, { start: 3, end: 4, peer: peer(4) }])
  assert.equal(opened(NON_MEMBER), 0, 'the non-member never got a session')

  // the resolver on the client: the same through the pinned mesh model id under team-mesh
  const resolver = createNodeProviders({ node: swarm.nodes[CLIENT], settings: { mesh: { activations: 'none' } }, env: {} })
  const viaResolver = await resolver.generate({ model: 'mesh/tiny', promptIds: prompt, maxTokens: 16, stopTokens: [], policy: 'team-mesh', team: teamId })
  assert.deepEqual(viaResolver.tokens, expected.tokens)
  assert.equal(viaResolver.route.privacy, 'team-mesh')
  assert.equal(opened(NON_MEMBER), 0)
  const listed = await resolver.models({ policy: 'team-mesh', team: teamId })
  assert.deepEqual(listed.map((m) => [m.id, m.privacy]), [['tiny', 'local'], ['mesh/tiny', 'team-mesh']])
  await resolver.close()
})

test('POST /api/run/mesh takes a team: team-mesh through the daemon route, local-only refused', async () => {
  const api = await startControlApi({ node: swarm.nodes[CLIENT], token: 't0ken', port: 0, routes: meshRunRoutes, logger: silentLogger(), onShutdownRequested: () => {} })
  try {
    const run = async (body: Record<string, unknown>): Promise<{ status: number, json: any }> => {
      const response = await fetch(`${api.url}/api/run/mesh`, { method: 'POST', headers: { authorization: 'Bearer t0ken', 'content-type': 'application/json' }, body: JSON.stringify(body) })
      return { status: response.status, json: await response.json() }
    }
    const base = { model: 'tiny', promptIds: prompt, maxTokens: 8, stopTokens: [], quantization: 'none' }
    const expected = await local.generate({ promptIds: prompt, maxTokens: 8, stopTokens: [] })
    const team = await run({ ...base, team: teamId })
    assert.equal(team.status, 200, JSON.stringify(team.json))
    assert.deepEqual(team.json.tokens, expected.tokens)
    assert.equal(team.json.privacy, 'team-mesh')
    assert.equal(team.json.team, teamId)
    assert.ok(!team.json.route.some((hop: { peer: string }) => hop.peer === peer(NON_MEMBER)))
    assert.equal(opened(NON_MEMBER), 0)
    const refused = await run({ ...base, policy: 'local-only' })
    assert.equal(refused.status, 400)
    assert.equal(refused.json.error.code, 'ERR_POLICY_REFUSED')
    const noTeam = await run({ ...base, policy: 'team-mesh' })
    assert.equal(noTeam.status, 400)
    assert.match(noTeam.json.error.message, /needs a team/)
  } finally {
    await api.stop()
  }
})

test('team-mesh with only a non-member serving a span fails with a clear error; policy mesh may use it', async () => {
  await stopServing(3)
  try {
    await assert.rejects(meshProvider(teamId).generate({ model: 'tiny', promptIds: prompt, maxTokens: 4, stopTokens: [] }), (err: unknown) => {
      assert.ok(err instanceof PermagentError)
      assert.equal(err.code, 'ERR_NO_ROUTE')
      assert.match(err.message, /do not cover layers/)
      assert.match(err.message, new RegExp(`1 candidate peer\\(s\\) are not members of team ${teamId} and were not asked`))
      return true
    })
    assert.equal(opened(NON_MEMBER), 0)

    const expected = await local.generate({ promptIds: prompt, maxTokens: 8, stopTokens: [] })
    const result = await meshProvider(undefined).generate({ model: 'tiny', promptIds: prompt, maxTokens: 8, stopTokens: [] })
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.route.privacy, 'mesh')
    assert.equal(result.route.hops?.[1].peer, peer(NON_MEMBER))
    assert.ok(opened(NON_MEMBER) >= 1, 'under policy mesh the non-member served')
  } finally {
    await serve(3)
  }
})

test('a non-member placed in the route is refused before any byte reaches it; the member behind it takes the span', async () => {
  const client = swarm.nodes[CLIENT]
  const admission = createPeerAdmission({ nodeGater: client.mesh.gater, team: { id: teamId, membership: client.team } })
  const libp2p = admittedLibp2p(client.mesh.libp2p, admission)
  const before = opened(NON_MEMBER)
  const hops = (middle: number[]): Array<{ start: number, end: number, peers: any[] }> => [
    { start: 1, end: 2, peers: [swarm.nodes[1].mesh.peerId] },
    { start: 2, end: 3, peers: middle.map((n) => swarm.nodes[n].mesh.peerId) },
    { start: 3, end: 4, peers: [swarm.nodes[4].mesh.peerId] }
  ]

  // only the non-member for the span: the run fails, naming why
  const alone = await MeshModel.open({ libp2p, dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, chain: hops([NON_MEMBER]), quantization: 'none', threads: 1 })
  try {
    await assert.rejects(alone.generate({ promptIds: prompt, maxTokens: 4, stopTokens: [] }), (err: unknown) => {
      assert.ok(err instanceof PermagentError)
      assert.equal(err.code, 'ERR_NO_ROUTE')
      assert.match(err.message, new RegExp(`not a member of team ${teamId}`))
      assert.ok(causes(err).includes('ERR_PEER_NOT_ADMITTED'), causes(err).join(' <- '))
      return true
    })
  } finally {
    await alone.close()
  }

  // the non-member first, a member second: the member serves, the refusal is a recorded failover
  const expected = await local.generate({ promptIds: prompt, maxTokens: 8, stopTokens: [] })
  const both = await MeshModel.open({ libp2p, dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, chain: hops([NON_MEMBER, 3]), quantization: 'none', threads: 1 })
  try {
    const result = await both.generate({ promptIds: prompt, maxTokens: 8, stopTokens: [] })
    assert.deepEqual(result.tokens, expected.tokens)
    // the refused dial surfaces as a failed stream open (openChannel's code) from the non-member to the member
    assert.deepEqual(result.failovers.map((f) => [f.hop, f.from, f.to, f.code]), [[1, peer(NON_MEMBER), peer(3), 'ERR_DIAL_FAILED']])
  } finally {
    await both.close()
  }
  assert.equal(opened(NON_MEMBER), before, 'the non-member got no session')
})

test('cloud-allowed: when no route over the mesh exists, the resolver falls through to the remote API; mesh alone says why it failed', async () => {
  const cloud = await startOpenAiNode(source)
  await stopServing(2)
  await stopServing(3)
  try {
    // too large to run here, so the mesh is tried first (team-mesh, then mesh), then the cloud
    const resolver = createNodeProviders({ node: swarm.nodes[CLIENT], settings: { localMaxModelBytes: 1, mesh: { activations: 'none' }, remote: { baseUrl: cloud.baseUrl } }, env: { PERMAGENT_REMOTE_API_KEY: cloud.token } })
    await assert.rejects(resolver.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 6, policy: 'mesh', team: teamId }), (err: unknown) => {
      assert.ok(err instanceof NoProviderError)
      assert.equal(err.code, 'ERR_NO_PROVIDER')
      assert.match(err.reasons['team-mesh'], /do not cover layers 1-4/)
      assert.match(err.reasons.mesh, /do not cover layers 1-4/)
      assert.match(err.reasons.remote, /policy mesh does not allow privacy class cloud/)
      return true
    })
    const expected = await local.generate({ prompt: 'hello world', maxTokens: 6, sampling: { temperature: 0 } })
    const result = await resolver.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 6, policy: 'cloud-allowed', team: teamId })
    assert.equal(result.route.privacy, 'cloud')
    assert.equal(result.text, expected.text)
  } finally {
    await cloud.close()
    await serve(2)
    await serve(3)
  }
})

test('membership is checked now: a member removed from the team is no longer used', async () => {
  const client = swarm.nodes[CLIENT]
  await client.team.removeMember(teamId, swarm.nodes[3].identity.brainId)
  assert.equal(client.team.isMember(teamId, swarm.nodes[3].mesh.peerId), false)
  const served = opened(3)
  await assert.rejects(meshProvider(teamId).generate({ model: 'tiny', promptIds: prompt, maxTokens: 4, stopTokens: [] }), (err: unknown) => err instanceof PermagentError && err.code === 'ERR_NO_ROUTE' && /2 candidate peer\(s\) are not members/.test(err.message))
  assert.equal(opened(3), served)
})
