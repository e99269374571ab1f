import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Permagent } from '../../src/permagent.ts'
import { openChannel, RequestError } from '../../src/mesh/index.ts'
import { SyncFrame } from '../../src/pb/sync.ts'
import { createSwarm, seededRandom, type Swarm } from '../../src/simulation/index.ts'
import { createSyncService, SYNC_PROTOCOL, type SyncService, type SyncServiceOptions, type SyncStats } from '../../src/team/sync/index.ts'
import { silentLogger } from '../../src/util/logger.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { hex, makeShard, shardId, TestStore } from './sync-helpers.ts'

const TEAM = 'team-0123456789abcdef'
const T0 = 1_700_000_000_000

function fill (store: TestStore, random: () => number, n: number, options: { from?: number, span?: number, valid?: boolean } = {}): Uint8Array[] {
  const made: Uint8Array[] = []
  for (let i = 0; i < n; i++) {
    const shard = makeShard(random, T0 + (options.from ?? 0) + Math.floor(random() * (options.span ?? 10_000_000)), 150 + Math.floor(random() * 300), options.valid ?? true)
    store.insert(shard)
    made.push(shard)
  }
  return made
}

async function serve (node: Permagent, store: TestStore, members: Set<string>, options: Partial<SyncServiceOptions> = {}): Promise<SyncService> {
  const service = createSyncService({ libp2p: node.mesh.libp2p, logger: silentLogger(), intervalMs: 0, syncOnConnect: false, teams: [[TEAM, store.team(members)]], ...options })
  await service.start()
  return service
}

function sameContents (a: TestStore, b: TestStore): boolean {
  if (a.shards.size !== b.shards.size) return false
  for (const key of a.shards.keys()) if (!b.shards.has(key)) return false
  return true
}

function assertDeliveredOnce (store: TestStore): void {
  for (const [id, count] of store.deliveries) assert.equal(count, 1, `shard ${id.slice(0, 12)} handed to acceptShards ${count} times`)
}

async function withSwarm (nodes: number, fn: (swarm: Swarm) => Promise<void>): Promise<void> {
  const swarm = await createSwarm({ nodes, topology: 'full' })
  // these tests run their own sync services over bare stores: set the nodes' team services aside
  for (const node of swarm.nodes) await node.team.stop()
  try {
    await fn(swarm)
  } finally {
    await swarm.stop()
  }
}

test('two nodes: sync converges both ways, each missing shard moves once, and a repeat costs one round trip', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, nodeB] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(42)
    const a = new TestStore()
    const b = new TestStore()
    for (const shard of fill(a, random, 3000)) b.insert(shard)
    const onlyA = fill(a, random, 400)
    const onlyB = fill(b, random, 250)
    const invalid = fill(a, random, 5, { valid: false })
    const served: SyncStats[] = []
    const serviceA = await serve(nodeA, a, members, { onSession: (stats) => { served.push(stats) } })
    const serviceB = await serve(nodeB, b, members)
    try {
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      const stats = await serviceB.syncWith(nodeA.mesh.peerId, TEAM, { signal: AbortSignal.timeout(30_000) })
      for (const shard of onlyA) assert.ok(b.has(shard))
      for (const shard of onlyB) assert.ok(a.has(shard))
      for (const shard of invalid) assert.equal(b.has(shard), false, 'an invalid shard is not stored')
      assert.equal(a.shards.size, b.shards.size + invalid.length)
      assert.equal(stats.accepted, onlyA.length)
      assert.equal(stats.rejected, invalid.length)
      assert.equal(stats.shardsReceived, onlyA.length + invalid.length)
      assert.equal(stats.shardsSent, onlyB.length)
      assert.equal(stats.peerAccepted, onlyB.length)
      assert.ok(stats.bytesReceived > stats.shardBytesReceived && stats.bytesSent > stats.shardBytesSent)
      assertDeliveredOnce(a)
      assertDeliveredOnce(b)
      await waitFor(() => served.length === 1, { timeoutMs: 5000, what: 'the responder reporting its session' })
      assert.equal(served[0].role, 'responder')
      assert.equal(served[0].shardsSent, onlyA.length + invalid.length)

      // B still lacks the invalid shards A holds: they come again and are rejected again, nothing else moves
      const again = await serviceB.syncWith(nodeA.mesh.peerId, TEAM)
      assert.equal(again.shardsReceived, invalid.length)
      assert.equal(again.accepted, 0)
      for (const shard of invalid) a.shards.delete(hex(shardId(shard)))
      const aClean = new TestStore()
      for (const shard of a.shards.values()) aClean.insert(shard)
      serviceA.removeTeam(TEAM)
      serviceA.addTeam(TEAM, aClean.team(members))
      const identical = await serviceB.syncWith(nodeA.mesh.peerId, TEAM)
      assert.equal(identical.rounds, 1)
      assert.equal(identical.shardsReceived + identical.shardsSent, 0)
      assert.ok(identical.bytesSent + identical.bytesReceived < 200, `${identical.bytesSent + identical.bytesReceived} bytes`)
    } finally {
      await serviceB.stop()
      await serviceA.stop()
    }
  })
})

test('several nodes converge through syncs on connect and periodic anti-entropy', async () => {
  await withSwarm(5, async (swarm) => {
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(7)
    const stores = swarm.nodes.map(() => new TestStore())
    const shared = fill(stores[0], random, 500)
    for (const store of stores.slice(1)) for (const shard of shared) store.insert(shard)
    for (const store of stores) fill(store, random, 100 + Math.floor(random() * 200))
    const total = new Set(stores.flatMap((s) => [...s.shards.keys()])).size
    const services = await Promise.all(swarm.nodes.map(async (node, i) => await serve(node, stores[i], members, { syncOnConnect: true, intervalMs: 150, peersPerRound: 2 })))
    try {
      await swarm.connect()
      await waitFor(() => stores.every((s) => s.shards.size === total), { timeoutMs: 30_000, what: 'every node holding every shard' })
      for (const store of stores.slice(1)) assert.ok(sameContents(stores[0], store))
    } finally {
      await Promise.all(services.map(async (s) => { await s.stop() }))
    }
  })
})

test('a peer refused by mayServe gets a typed error and nothing, for sync and fetch', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, outsider] = swarm.nodes
    const random = seededRandom(3)
    const a = new TestStore()
    const o = new TestStore()
    const secrets = fill(a, random, 200)
    fill(o, random, 20)
    const sizeOfA = a.shards.size
    // A's team has only A; the outsider believes A is a fellow member
    const serviceA = await serve(nodeA, a, new Set([nodeA.mesh.peerId.toString()]))
    const serviceO = await serve(outsider, o, new Set([nodeA.mesh.peerId.toString(), outsider.mesh.peerId.toString()]))
    try {
      await outsider.mesh.connect(nodeA.mesh.addresses()[0])
      await assert.rejects(serviceO.syncWith(nodeA.mesh.peerId, TEAM),
        (err: unknown) => err instanceof RequestError && err.code === 'ERR_NOT_AUTHORIZED' && err.remote)
      await assert.rejects(serviceO.fetch(nodeA.mesh.peerId, TEAM, [shardId(secrets[0])]),
        (err: unknown) => err instanceof RequestError && err.code === 'ERR_NOT_AUTHORIZED' && err.remote)
      await assert.rejects(serviceO.syncWith(nodeA.mesh.peerId, 'another-team'), (err: unknown) => (err as { code?: string }).code === 'ERR_UNKNOWN_TEAM')
      assert.equal(o.shards.size, 20)
      assert.equal(o.acceptCalls, 0)
      assert.equal(a.shards.size, sizeOfA)
      assert.equal(a.acceptCalls, 0)
      // and A does not start a sync with a non-member either
      await assert.rejects(serviceA.syncWith(outsider.mesh.peerId, TEAM), (err: unknown) => err instanceof RequestError && err.code === 'ERR_NOT_AUTHORIZED' && !err.remote)
    } finally {
      await serviceO.stop()
      await serviceA.stop()
    }
  })
})

test('malformed, out-of-order and oversized messages are refused with typed errors and the server keeps serving', async () => {
  await withSwarm(3, async (swarm) => {
    const [nodeA, nodeB, nodeC] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(9)
    const a = new TestStore()
    const b = new TestStore()
    fill(a, random, 300)
    const serviceA = await serve(nodeA, a, members)
    const serviceB = await serve(nodeB, b, members)
    try {
      await nodeC.mesh.connect(nodeA.mesh.addresses()[0])
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      const exchange = async (frames: Uint8Array[]): Promise<string> => {
        const channel = await openChannel(nodeC.mesh.libp2p, nodeA.mesh.peerId, SYNC_PROTOCOL, { maxMessageBytes: 4 * 1024 * 1024, signal: AbortSignal.timeout(10_000) })
        try {
          for (const frame of frames) await channel.send(frame)
          for (;;) {
            const reply = SyncFrame.decode(await channel.receive({ timeoutMs: 10_000 }))
            if (reply.error != null) return reply.error.code
          }
        } catch (err) {
          return (err as { code?: string }).code ?? 'unknown'
        } finally {
          channel.abort(new Error('done'))
        }
      }
      const open = SyncFrame.encode({ open: { version: 1, teamId: TEAM } })
      assert.equal(await exchange([Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f])]), 'ERR_INVALID_MESSAGE')
      assert.equal(await exchange([SyncFrame.encode({ shards: { shards: [new Uint8Array(10)] } })]), 'ERR_PROTOCOL')
      assert.equal(await exchange([SyncFrame.encode({ open: { version: 9, teamId: TEAM } })]), 'ERR_UNSUPPORTED_VERSION')
      assert.equal(await exchange([SyncFrame.encode({ open: { version: 1, teamId: TEAM }, ack: { accepted: 1, rejected: 0 } })]), 'ERR_INVALID_MESSAGE')
      const badFingerprint = SyncFrame.encode({ reconcile: { ranges: [{ timestamp: 0, idPrefix: new Uint8Array(0), infinite: true, mode: 1, fingerprint: new Uint8Array(3), count: 5, ids: new Uint8Array(0) }], want: new Uint8Array(0) } })
      assert.equal(await exchange([open, badFingerprint]), 'ERR_INVALID_MESSAGE')
      const oversizedShard = SyncFrame.encode({ shards: { shards: [new Uint8Array(70 * 1024)] } })
      // a mismatched fingerprint over a range where A holds many: A splits (pushes nothing), then reads our turn
      const mismatch = SyncFrame.encode({ reconcile: { ranges: [{ timestamp: 0, idPrefix: new Uint8Array(0), infinite: true, mode: 1, fingerprint: new Uint8Array(16).fill(1), count: 1000, ids: new Uint8Array(0) }], want: new Uint8Array(0) } })
      assert.equal(await exchange([open, mismatch, oversizedShard]), 'ERR_MESSAGE_TOO_LARGE')
      const oversizedFrame = await exchange([open, new Uint8Array(2 * 1024 * 1024)])
      assert.ok(['ERR_MESSAGE_TOO_LARGE', 'ERR_STREAM_CLOSED', 'ERR_STREAM'].includes(oversizedFrame), oversizedFrame)
      assert.equal(a.acceptCalls, 0)
      // the server still serves a well-behaved member
      const stats = await serviceB.syncWith(nodeA.mesh.peerId, TEAM)
      assert.equal(stats.accepted, 300)
      assert.ok(sameContents(a, b))
    } finally {
      await serviceB.stop()
      await serviceA.stop()
    }
  })
})

test('a node stopped mid-sync and restarted converges, losing and duplicating nothing', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, nodeB] = swarm.nodes
    const random = seededRandom(11)
    const a = new TestStore()
    const b = new TestStore()
    const all = fill(a, random, 4000)
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const small = { session: { batchBytes: 16 * 1024 } }
    const serviceA = await serve(nodeA, a, members, small)
    const serviceB = await serve(nodeB, b, members, small)
    let stopping: Promise<void> | undefined
    // the fifth batch is not acknowledged until the node is down, so the session cannot finish first
    b.afterBatch = async (calls) => {
      if (calls === 5) stopping = nodeB.stop()
      if (calls >= 5) await stopping
    }
    try {
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      await assert.rejects(serviceB.syncWith(nodeA.mesh.peerId, TEAM))
      await stopping
      await serviceB.stop()
      const partial = b.shards.size
      assert.ok(partial > 0 && partial < all.length, `interrupted after ${partial} of ${all.length}`)
      b.afterBatch = undefined

      // the same identity and the same store (what SQLite kept) come back as a new process
      const restarted = await swarm.addNode({ identity: nodeB.identity })
      await restarted.team.stop()
      members.add(restarted.mesh.peerId.toString())
      const serviceB2 = await serve(restarted, b, members, small)
      try {
        await restarted.mesh.connect(nodeA.mesh.addresses()[0])
        const stats = await serviceB2.syncWith(nodeA.mesh.peerId, TEAM)
        assert.equal(stats.accepted, all.length - partial)
        assert.equal(stats.shardsReceived, all.length - partial)
        assert.ok(sameContents(a, b))
        assertDeliveredOnce(b)
        assert.equal(b.deliveries.size, all.length)
      } finally {
        await serviceB2.stop()
      }
    } finally {
      await serviceA.stop()
    }
  })
})

test('fetch by id: found, missing and authorised; fetchShards hands them to acceptShards', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, nodeB] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(13)
    const a = new TestStore()
    const b = new TestStore()
    const shards = fill(a, random, 600)
    const serviceA = await serve(nodeA, a, members)
    const serviceB = await serve(nodeB, b, members)
    try {
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      const unknown = new Uint8Array(32).fill(7)
      const result = await serviceB.fetch(nodeA.mesh.peerId, TEAM, [shardId(shards[0]), unknown, shardId(shards[1])])
      assert.deepEqual(result.items.map((i) => hex(i.data)), [hex(shards[0]), hex(shards[1])])
      assert.deepEqual(result.missing.map(hex), [hex(unknown)])
      assert.equal(b.acceptCalls, 0, 'fetch alone stores nothing')
      await assert.rejects(serviceB.fetch(nodeA.mesh.peerId, TEAM, shards.slice(0, 257).map(shardId)), (err: unknown) => (err as { code?: string }).code === 'ERR_INVALID_INPUT')
      await assert.rejects(serviceB.fetch(nodeA.mesh.peerId, TEAM, [shardId(shards[0])], { type: 2 }),
        (err: unknown) => err instanceof RequestError && err.code === 'ERR_UNSUPPORTED_RESOURCE')
      const fetched = await serviceB.fetchShards(nodeA.mesh.peerId, TEAM, [...shards.slice(0, 500).map(shardId), unknown])
      assert.equal(fetched.accepted, 500)
      assert.deepEqual(fetched.missing.map(hex), [hex(unknown)])
      const stats = await serviceB.syncWith(nodeA.mesh.peerId, TEAM)
      assert.equal(stats.accepted, 100)
      assert.ok(sameContents(a, b))
      assertDeliveredOnce(b)
    } finally {
      await serviceB.stop()
      await serviceA.stop()
    }
  })
})

test('syncWith during a running session queues one shared follow-up that sees what arrived meanwhile', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, nodeB] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(17)
    const a = new TestStore()
    const b = new TestStore()
    fill(a, random, 1500, { from: 1_000_000 })
    const small = { session: { batchBytes: 16 * 1024 } }
    const serviceA = await serve(nodeA, a, members, small)
    const serviceB = await serve(nodeB, b, members, small)
    try {
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      const late = makeShard(random, T0, 300)
      let followUps: Array<Promise<SyncStats>> = []
      b.afterBatch = (calls) => {
        if (calls !== 2) return
        // written on A after A computed this session's pushes, below every range already settled
        a.insert(late)
        followUps = [serviceB.syncWith(nodeA.mesh.peerId, TEAM), serviceB.syncWith(nodeA.mesh.peerId, TEAM)]
      }
      const first = await serviceB.syncWith(nodeA.mesh.peerId, TEAM)
      assert.equal(first.accepted, 1500)
      assert.equal(b.has(late), false, 'the running session did not see the late shard')
      assert.equal(followUps.length, 2)
      const [second, third] = await Promise.all(followUps)
      assert.equal(second, third, 'calls made during a session share one follow-up')
      assert.equal(second.accepted, 1)
      assert.ok(b.has(late))
      assertDeliveredOnce(b)
    } finally {
      await serviceB.stop()
      await serviceA.stop()
    }
  })
})

test('both nodes starting a session with each other at once: one goes on, the other follows it, each shard moves once', async () => {
  await withSwarm(2, async (swarm) => {
    const [nodeA, nodeB] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const random = seededRandom(11)
    const a = new TestStore()
    const b = new TestStore()
    for (const shard of fill(a, random, 500)) b.insert(shard)
    const onlyA = fill(a, random, 3000)
    const onlyB = fill(b, random, 200)
    const failures: Error[] = []
    const record = (_stats: SyncStats, error?: Error): void => { if (error != null) failures.push(error) }
    const serviceA = await serve(nodeA, a, members, { onSession: record })
    const serviceB = await serve(nodeB, b, members, { onSession: record })
    try {
      await nodeB.mesh.connect(nodeA.mesh.addresses()[0])
      const [fromA, fromB] = await Promise.all([
        serviceA.syncWith(nodeB.mesh.peerId, TEAM, { signal: AbortSignal.timeout(60_000) }),
        serviceB.syncWith(nodeA.mesh.peerId, TEAM, { signal: AbortSignal.timeout(60_000) })
      ])
      assert.ok(sameContents(a, b))
      for (const shard of onlyA) assert.ok(b.has(shard))
      for (const shard of onlyB) assert.ok(a.has(shard))
      // had both sessions run side by side, the shards would have been pushed (and checked) twice
      assertDeliveredOnce(a)
      assertDeliveredOnce(b)
      assert.equal(fromA.shardsSent + fromB.shardsReceived, onlyA.length)
      assert.equal(fromA.shardsReceived + fromB.shardsSent, onlyB.length)
      // the session that was refused for overlap is the only failure, and only on the larger id's side
      const overlaps = failures.filter((e) => e instanceof RequestError && e.code === 'ERR_SESSION_OVERLAP')
      assert.equal(overlaps.length, failures.length, failures.map((e) => e.message).join('; '))
    } finally {
      await serviceB.stop()
      await serviceA.stop()
    }
  })
})
