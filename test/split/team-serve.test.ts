import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Permagent } from '../../src/permagent.ts'
import { importModel, loadManifest } from '../../src/model/index.ts'
import { createSwarm } from '../../src/simulation/index.ts'
import { fetchCapacityRecord, MeshModel } from '../../src/split/index.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { splitRoutes } from '../../node/api/routes/split.ts'
import { formTeam } from '../team/helpers.ts'
import { tempDir, tinyCheckpoint } from '../model/fixtures.ts'
import { LAYERS, promptIds } from './fixtures.ts'

/** Calls a control-API route of this module in process, as the daemon would. */
async function call (node: Permagent, method: 'GET' | 'POST', path: string, body?: unknown): Promise<any> {
  const route = splitRoutes.find((r) => r.method === method && r.path === path)
  if (route == null) throw new Error(`no route ${method} ${path}`)
  return await route.handler({ node, body, params: {}, query: new URLSearchParams(), signal: AbortSignal.timeout(60_000), request: null as never, response: null as never, requestShutdown: () => {} })
}

async function generateFrom (client: Permagent, server: Permagent): Promise<{ tokens: number[], failovers: Array<{ code: string }> }> {
  const mesh = await MeshModel.open({ libp2p: client.mesh.libp2p, dataDir: client.dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, chain: [{ start: 1, end: 4, peers: [server.mesh.peerId] }], quantization: 'none', threads: 1 })
  try {
    return await mesh.generate({ promptIds: promptIds(5), maxTokens: 2, stopTokens: [] })
  } finally {
    await mesh.close()
  }
}

test('serve --team: sessions and the capacity record for current members only', async (t) => {
  const dir = await tempDir('permagent-team-serve-')
  const swarm = await createSwarm({ nodes: 3, topology: 'full' })
  t.after(async () => {
    await call(swarm.nodes[0], 'POST', '/api/serve/stop').catch(() => {})
    await swarm.stop()
    await dir.cleanup()
  })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 20_000 })
  const [server, member, outsider] = swarm.nodes
  const ckpt = await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS })
  for (const node of swarm.nodes) await importModel(node.dataDir, { source: ckpt, name: 'tiny' })
  const manifest = await loadManifest(server.dataDir, 'tiny')
  const model = { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }
  const teamId = await formTeam([server.team, member.team])
  const memberKey = Buffer.from(member.identity.publicKey).toString('hex')
  await waitFor(() => server.team.membership(teamId)?.isActiveMember(memberKey) === true, { timeoutMs: 20_000, what: 'the server seeing the member' })

  await assert.rejects(call(server, 'POST', '/api/serve', { model: 'tiny', start: 1, end: 4, team: 'ab'.repeat(32) }), (err: Error & { code?: string }) => err.code === 'ERR_UNKNOWN_TEAM')
  const started = await call(server, 'POST', '/api/serve', { model: 'tiny', start: 1, end: 4, team: teamId, maxSessions: 2 })
  assert.equal(started.team, teamId)
  assert.deepEqual((await call(server, 'GET', '/api/serve')).serving.layers, { start: 1, end: 4 })

  await t.test('a member generates; its capacity record says team only', async () => {
    const result = await generateFrom(member, server)
    assert.equal(result.tokens.length, 2)
    assert.deepEqual(result.failovers, [])
    const { info } = await fetchCapacityRecord(member.mesh.libp2p, server.mesh.peerId, model)
    assert.equal(info.teamOnly, true)
    assert.deepEqual([info.start, info.end, info.maxSessions], [1, 4, 2])
  })

  await t.test('a non-member is refused a session and the capacity record', async () => {
    await assert.rejects(generateFrom(outsider, server), /does not take sessions from this peer/)
    assert.equal((await call(server, 'GET', '/api/serve')).serving.stats.errors.ERR_PEER_REFUSED, 1)
    await assert.rejects(fetchCapacityRecord(outsider.mesh.libp2p, server.mesh.peerId, model), (err: Error & { code?: string }) => err.code === 'ERR_PEER_REFUSED')
  })

  await t.test('a member removed from the team is refused from then on', async () => {
    await server.team.removeMember(teamId, member.identity.brainId)
    assert.equal(server.team.isMember(teamId, member.mesh.peerId), false)
    await assert.rejects(generateFrom(member, server), /does not take sessions from this peer/)
    assert.equal((await call(server, 'GET', '/api/serve')).serving.stats.errors.ERR_PEER_REFUSED, 2)
  })

  assert.deepEqual(await call(server, 'POST', '/api/serve/stop'), { stopped: true })
  assert.equal((await call(server, 'GET', '/api/serve')).serving, null)
})
