import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { MeshLibp2p } from '../../src/mesh/index.ts'
import { importModel, loadManifest } from '../../src/model/index.ts'
import type { NetworkOptions } from '../../src/permagent.ts'
import { CapacityRecord, SignedCapacityRecord } from '../../src/pb/capacity.ts'
import { createSwarm } from '../../src/simulation/index.ts'
import {
  createCapacityResponder, createLayerAnnouncer, createLayerServer, discoverModelServers, fetchCapacityRecord, findModelServers,
  layerServerCandidates, openRoutedModel, signCapacityRecord, verifyCapacityRecord, CapacityRecordError, MAX_CAPACITY_TTL_MS,
  type CapacityResponder, type LayerAnnouncer, type LayerServer
} from '../../src/split/index.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { tempDir, tinyCheckpoint } from '../model/fixtures.ts'
import { LAYERS, promptIds } from './fixtures.ts'

/** Whether the node's own DHT provider store holds an entry for the key (kad-dht answers those first, from itself). */
async function holdsLocalProviderEntry (node: { mesh: { libp2p: MeshLibp2p, peerId: PeerId } }, key: CID): Promise<boolean> {
  for await (const event of node.mesh.libp2p.services.dht.findProviders(key, { signal: AbortSignal.timeout(5_000) })) {
    return event.name === 'PEER_RESPONSE' && event.from.equals(node.mesh.peerId)
  }
  return false
}

const capacityError = (code: string) => (err: unknown): boolean => err instanceof CapacityRecordError && err.code === code

test('layer servers announce on the DHT; a client that is not connected to them finds them, verifies their records, generates, and sees a withdrawal', async (t) => {
  const dir = await tempDir('permagent-announce-')
  const dataDir = join(dir.path, 'data')
  await importModel(dataDir, { source: await tinyCheckpoint(join(dir.path, 'ckpt'), { layers: LAYERS }), name: 'tiny' })
  const manifest = await loadManifest(dataDir, 'tiny')
  const model = { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }
  // a star: node 0 is the hub; the client (1) and the servers (2, 3) are connected to it only
  // (the client dials no discovered peers: targetPeers 1)
  const swarm = await createSwarm({ nodes: 4, topology: 'star', nodeOptions: (i) => i === 1 ? { network: { targetPeers: 1 } as NetworkOptions } : {} })
  const servers: LayerServer[] = []
  const responders: CapacityResponder[] = []
  const announcers: LayerAnnouncer[] = []
  t.after(async () => {
    for (const a of announcers) await a.stop()
    for (const r of responders) await r.stop()
    for (const s of servers) await s.stop()
    await swarm.stop()
    await dir.cleanup()
  })
  await swarm.connect()
  await swarm.waitForTopology({ timeoutMs: 20_000 })
  await swarm.waitForRoutingTables(1, { timeoutMs: 20_000 })
  const [, client, serverA, serverB] = swarm.nodes
  const spans = [{ start: 1, end: 3 }, { start: 3, end: 4 }]
  for (const [i, node] of [serverA, serverB].entries()) {
    const server = createLayerServer({ libp2p: node.mesh.libp2p, dataDir, model: 'tiny', layers: spans[i], threads: 1, limits: { maxSessions: 3 } })
    await server.start()
    servers.push(server)
    const responder = createCapacityResponder({ libp2p: node.mesh.libp2p, identity: node.identity })
    await responder.start()
    responders.push(responder)
    const announcer = createLayerAnnouncer({ libp2p: node.mesh.libp2p, server, responder, retryMs: 100, freeMemory: () => 8e9 })
    await announcer.start()
    announcers.push(announcer)
  }

  await t.test('the client finds every server of the model through the DHT, then by span', async () => {
    // the DHT's own routing-table upkeep may have dialled a server; the lookup starts from the hub alone
    for (const node of [serverA, serverB]) await client.mesh.libp2p.hangUp(node.mesh.peerId)
    for (const node of [serverA, serverB]) assert.equal(client.mesh.libp2p.getConnections(node.mesh.peerId).length, 0, 'not connected before the lookup')
    const found = await waitFor(async () => {
      const peers = await findModelServers(client.mesh.libp2p, model, { timeoutMs: 5_000 })
      return peers.length === 2 ? peers : undefined
    }, { timeoutMs: 30_000, what: 'both servers found on the DHT' })
    assert.deepEqual(found.map(String).sort(), [serverA, serverB].map((n) => n.mesh.peerId.toString()).sort())
    const bySpan = await findModelServers(client.mesh.libp2p, model, { span: spans[1], timeoutMs: 5_000 })
    assert.deepEqual(bySpan.map(String), [serverB.mesh.peerId.toString()])
    const otherModel = await findModelServers(client.mesh.libp2p, { ...model, weightsSha256: '00'.repeat(32) }, { timeoutMs: 2_000 })
    assert.deepEqual(otherModel, [])
  })

  await t.test('capacity records verify against the servers\' keys and carry their measured figures', async () => {
    const found = await discoverModelServers(client.mesh.libp2p, model, { timeoutMs: 5_000 })
    assert.equal(found.servers.length, 2)
    assert.deepEqual(found.withdrawn, [])
    const a = found.servers.find((s) => s.peer.equals(serverA.mesh.peerId))
    assert.ok(a != null)
    assert.deepEqual([a.start, a.end, a.maxSessions, a.freeSessions, a.freeMemoryBytes, a.withdrawn, a.teamOnly], [1, 3, 3, 3, 8e9, false, false])
    assert.equal(a.kvBytesPerPosition, 2 * 2 * manifest.spec.numKvHeads * manifest.spec.headDim * 4)
    assert.ok(a.spanWeightBytes > 0)
    assert.ok(a.msPerLayer > 0 && Math.abs(a.tokensPerSecond - 1000 / (a.msPerLayer * 2)) < 1e-9)
    assert.ok(a.expiresAtMs > Date.now() && a.expiresAtMs - a.issuedAtMs <= MAX_CAPACITY_TTL_MS)
    assert.match(a.version, /^\d+\.\d+\.\d+/)
  })

  await t.test('a forged, misattributed or expired record is rejected', async () => {
    const { bytes } = await fetchCapacityRecord(client.mesh.libp2p, serverA.mesh.peerId, model)
    const signed = SignedCapacityRecord.decode(bytes)
    const record = CapacityRecord.decode(signed.record)
    // a field changed after signing
    const tampered = SignedCapacityRecord.encode({ record: CapacityRecord.encode({ ...record, freeSessions: 99, maxSessions: 99 }) as Uint8Array<ArrayBuffer>, signature: signed.signature })
    assert.throws(() => verifyCapacityRecord(tampered, { peer: serverA.mesh.peerId, model }), capacityError('ERR_CAPACITY_SIGNATURE'))
    // signed by another key while naming server A
    const impostor = await identityFromKeyPair(generateEd25519())
    const forgedRecord = CapacityRecord.encode(record)
    const forged = SignedCapacityRecord.encode({ record: forgedRecord as Uint8Array<ArrayBuffer>, signature: impostor.sign('permagent/infer/capacity/v1', forgedRecord) as Uint8Array<ArrayBuffer> })
    assert.throws(() => verifyCapacityRecord(forged, { peer: serverA.mesh.peerId, model }), capacityError('ERR_CAPACITY_SIGNATURE'))
    // signed under another context
    const wrongContext = SignedCapacityRecord.encode({ record: signed.record, signature: serverA.identity.sign('permagent/team/shard/v1', signed.record) as Uint8Array<ArrayBuffer> })
    assert.throws(() => verifyCapacityRecord(wrongContext, { peer: serverA.mesh.peerId, model }), capacityError('ERR_CAPACITY_SIGNATURE'))
    // a genuine record of A offered as B's, or for another model
    assert.throws(() => verifyCapacityRecord(bytes, { peer: serverB.mesh.peerId, model }), capacityError('ERR_CAPACITY_MISMATCH'))
    assert.throws(() => verifyCapacityRecord(bytes, { peer: serverA.mesh.peerId, model: { ...model, configSha256: 'ab'.repeat(32) } }), capacityError('ERR_CAPACITY_MISMATCH'))
    // genuine but expired (a replay), and one claiming a validity longer than allowed
    const figures = { model, start: 1, end: 3, msPerLayer: 1, tokensPerSecond: 500, maxSessions: 3, freeSessions: 3, maxLength: 512, freeMemoryBytes: 1, spanWeightBytes: 1, kvBytesPerPosition: 1, version: '0.1.0', withdrawn: false, teamOnly: false }
    const old = signCapacityRecord(serverA.identity, { ...figures, issuedAtMs: Date.now() - 3_600_000, expiresAtMs: Date.now() - 3_000_000 })
    assert.throws(() => verifyCapacityRecord(old, { peer: serverA.mesh.peerId, model }), capacityError('ERR_CAPACITY_EXPIRED'))
    const eternal = signCapacityRecord(serverA.identity, { ...figures, issuedAtMs: Date.now(), expiresAtMs: Date.now() + 30 * 86_400_000 })
    assert.throws(() => verifyCapacityRecord(eternal, { peer: serverA.mesh.peerId, model }), capacityError('ERR_CAPACITY_INVALID'))
    assert.throws(() => verifyCapacityRecord(new Uint8Array([1, 2, 3]), {}), capacityError('ERR_CAPACITY_INVALID'))
  })

  await t.test('the client generates over the servers the DHT named', async () => {
    const peers = await layerServerCandidates(client.mesh.libp2p, { model, timeoutMs: 5_000 })
    for (const node of [serverA, serverB]) assert.ok(peers.some((p) => p.equals(node.mesh.peerId)))
    const { model: mesh, route } = await openRoutedModel({ libp2p: client.mesh.libp2p, dataDir, name: 'tiny', headLayers: 1, tailLayers: 1, peers, quantization: 'none', threads: 1 })
    try {
      assert.deepEqual(route.chain.map((h) => [h.start, h.end, h.peers[0].toString()]), [[1, 3, serverA.mesh.peerId.toString()], [3, 4, serverB.mesh.peerId.toString()]])
      const result = await mesh.generate({ promptIds: promptIds(5), maxTokens: 3, stopTokens: [] })
      assert.equal(result.tokens.length, 3)
    } finally {
      await mesh.close()
    }
  })

  await t.test('stopping withdraws: the signed record says withdrawn, and discovery drops the server', async () => {
    for (const key of [announcers[1].keys.model, announcers[1].keys.span]) assert.equal(await holdsLocalProviderEntry(serverB, key), true)
    await announcers[1].stop()
    // its own provider entry is gone, so kad-dht's reprovider will not republish it (the span key:
    // B alone provides it; B's store may hold A's entry for the model key, as a DHT peer of A)
    assert.equal(await holdsLocalProviderEntry(serverB, announcers[1].keys.span), false)
    assert.equal(await holdsLocalProviderEntry(serverA, announcers[0].keys.span), true)
    await servers[1].stop()
    const { info } = await fetchCapacityRecord(client.mesh.libp2p, serverB.mesh.peerId, model)
    assert.equal(info.withdrawn, true)
    assert.equal(info.freeSessions, 0)
    // the hub still holds B's provider record (Kademlia cannot recall it); the record tells the truth
    const found = await discoverModelServers(client.mesh.libp2p, model, { timeoutMs: 5_000 })
    assert.deepEqual(found.servers.map((s) => s.peer.toString()), [serverA.mesh.peerId.toString()])
    assert.deepEqual(found.withdrawn.map((s) => s.peer.toString()), [serverB.mesh.peerId.toString()])
    // a node that stops answering at all gives no record
    await responders[1].stop()
    await assert.rejects(fetchCapacityRecord(client.mesh.libp2p, serverB.mesh.peerId, model), (err: Error & { code?: string }) => err.code === 'ERR_DIAL_FAILED')
  })
})
