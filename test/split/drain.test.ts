import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { KvCache, LocalModel } from '../../src/inference/index.ts'
import { MessageChannel, openChannel } from '../../src/mesh/index.ts'
import { importModel, loadManifest, type ModelManifest } from '../../src/model/index.ts'
import { InferRequest, InferResponse } from '../../src/pb/infer.ts'
import { waitUntil } from '../../src/simulation/index.ts'
import { createLayerServer, HANDOFF_PROTOCOL, INFER_PROTOCOL, MeshModel, type LayerServer, type LayerServerLimits, type MeshGenerateResult, type MeshHop } from '../../src/split/index.ts'
import { HandoffWire } from '../../src/split/handoff-wire.ts'
import { hexToBytes } from '../../src/split/protocol.ts'
import { encodeActivationFrame, extractKv, kvStateInput, UsxfEncoder, type UsxfSigner } from '../../src/usxf/index.ts'
import { tinyCheckpoint } from '../model/fixtures.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'

// Node 0 is the client; nodes 1-3 serve layers 1-2, 2-3 and 3-4 (world.servers). Nodes 4-8 get
// servers per test: two for layers 2-3 (the drained primary and its target), one of another
// model, a fake server, a target with a short hold.
let world: SplitWorld
let localSplit: LocalModel
let manifest: ModelManifest
const started: LayerServer[] = []

before(async () => {
  world = await splitWorld(SPANS, { extraNodes: 5 })
  await importModel(world.dataDir, { source: await tinyCheckpoint(join(world.dir.path, 'other'), { layers: 5, seed: 8 }), name: 'other' })
  // the same cut as the chain, run locally: a mesh run over f32 activations gives these logits bit for bit
  localSplit = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1, splits: [1, 2, 3, 4] })
  manifest = await loadManifest(world.dataDir, world.model)
})

after(async () => {
  for (const server of started) await server.stop()
  await localSplit?.close()
  await world?.close()
})

async function serve (node: number, span: { start: number, end: number }, options: { model?: string, limits?: Partial<LayerServerLimits> } = {}): Promise<LayerServer> {
  const server = createLayerServer({ libp2p: world.swarm.nodes[node].mesh.libp2p, dataDir: world.dataDir, model: options.model ?? world.model, layers: span, threads: 1, limits: options.limits })
  await server.start()
  started.push(server)
  return server
}

async function stopAll (...servers: LayerServer[]): Promise<void> {
  for (const server of servers) await server.stop()
}

function chain (middle: number[]): MeshHop[] {
  return [
    { ...SPANS[0], peers: [world.peer(1)] },
    { ...SPANS[1], peers: middle.map((node) => world.peer(node)) },
    { ...SPANS[2], peers: [world.peer(3)] }
  ]
}

async function openMesh (middle: number[]): Promise<MeshModel> {
  return await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(middle), quantization: 'none', threads: 1 })
}

const identity = (node: number): UsxfSigner => world.swarm.nodes[node].identity

interface Running {
  results: Promise<Array<MeshGenerateResult & { logits: Float32Array[] }>>
  /** Tokens each generation has produced so far. */
  produced: number[]
  progress: EventTarget
}

/** Starts one generation per request on `mesh`, concurrently, recording every logits row. */
function generateAll (mesh: MeshModel, requests: Array<{ promptIds: number[], maxTokens: number, stopTokens: number[] }>): Running {
  const produced = requests.map(() => 0)
  const progress = new EventTarget()
  const results = Promise.all(requests.map(async (request, i) => {
    const logits: Float32Array[] = []
    const result = await mesh.generate({
      ...request,
      onLogits: (position, row) => { logits[position] = row.slice() },
      onToken: () => { produced[i]++; progress.dispatchEvent(new Event('token')) }
    })
    return { ...result, logits }
  }))
  results.catch(() => {})
  return { results, produced, progress }
}

async function expectedRuns (requests: Array<{ promptIds: number[], maxTokens: number, stopTokens: number[] }>): Promise<Array<{ tokens: number[], logits: Float32Array[] }>> {
  const out = []
  for (const request of requests) {
    const logits: Float32Array[] = []
    const { tokens } = await localSplit.generate({ ...request, onLogits: (position, row) => { logits[position] = row.slice() } })
    out.push({ tokens, logits })
  }
  return out
}

function assertSameRun (got: { tokens: number[], logits: Float32Array[] }, expected: { tokens: number[], logits: Float32Array[] }, what: string): void {
  assert.deepEqual(got.tokens, expected.tokens, `${what}: tokens`)
  assert.equal(got.logits.length, expected.logits.length)
  for (let i = 0; i < got.logits.length; i++) assert.deepEqual(got.logits[i], expected.logits[i], `${what}: logits at position ${i} bit for bit`)
}

const requestsFor = (seeds: number[]): Array<{ promptIds: number[], maxTokens: number, stopTokens: number[] }> =>
  seeds.map((seed) => ({ promptIds: promptIds(8 + seed * 3, seed + 20), maxTokens: 160, stopTokens: [] }))

test('a drained server hands three live sessions to another mid-generation: they continue there bit for bit, nothing replayed', async () => {
  const primary = await serve(4, SPANS[1])
  const target = await serve(5, SPANS[1])
  const mesh = await openMesh([4, 5])
  try {
    const requests = requestsFor([1, 2, 3])
    const expected = await expectedRuns(requests)
    const running = generateAll(mesh, requests)
    await waitUntil(() => primary.stats().sessions === 3 && running.produced.every((n) => n >= 4), {
      events: [{ target: running.progress, type: 'token' }], timeoutMs: 60_000, what: 'three sessions a few steps into their generation'
    })
    const drained = await primary.drain(world.peer(5), { identity: identity(4) })
    const results = await running.results
    assert.equal(drained.moved.length, 3, JSON.stringify(drained.failed))
    assert.deepEqual(drained.failed, [])
    assert.equal(drained.awaitingClients, 0)
    for (const [i, result] of results.entries()) {
      assertSameRun(result, expected[i], `generation ${i}`)
      assert.deepEqual(result.failovers, [], 'no failover: nothing replayed')
      assert.equal(result.handoffs?.length, 1)
      const [handoff] = result.handoffs ?? []
      assert.equal(handoff.hop, 1)
      assert.equal(handoff.from, world.peer(4).toString())
      assert.equal(handoff.to, world.peer(5).toString())
      const moved = drained.moved.find((m) => m.positions === handoff.positions)
      assert.ok(moved !== undefined, 'the client resumed at the positions the server handed over')
      assert.ok(handoff.positions >= requests[i].promptIds.length + 3 && handoff.positions < requests[i].promptIds.length + requests[i].maxTokens, `moved mid-generation (at ${handoff.positions})`)
    }
    assert.deepEqual(primary.stats().handoffs, { out: 3, in: 0, resumed: 0, expired: 0 })
    assert.equal(primary.stats().state, 'draining')
    assert.equal(primary.stats().sessions, 0)
    assert.deepEqual(target.stats().handoffs, { out: 0, in: 3, resumed: 3, expired: 0 })
    assert.equal(target.stats().adopted, 0)
    assert.equal(target.stats().sessions, 0, 'the resumed sessions were closed at the end of their generations')
    // draining: no new sessions; a new client goes to the other server (a failover with nothing to replay)
    const fresh = await openMesh([4, 5])
    try {
      const after = await fresh.generate({ promptIds: promptIds(6, 3), maxTokens: 4, stopTokens: [] })
      assert.deepEqual(after.failovers.map((f) => [f.code, f.to, f.replayed]), [['ERR_DRAINING', world.peer(5).toString(), 0]])
      assert.equal(after.handoffs, undefined)
    } finally {
      await fresh.close()
    }
  } finally {
    await mesh.close()
    await stopAll(primary, target)
  }
})

test('a target serving another span or model refuses: the source keeps serving every session, and a drain to a right target then moves them', async () => {
  const primary = await serve(4, SPANS[1])
  const otherModel = await serve(6, SPANS[1], { model: 'other' })
  const target = await serve(5, SPANS[1])
  const mesh = await openMesh([4, 5])
  try {
    const requests = requestsFor([4, 5])
    const expected = await expectedRuns(requests)
    const running = generateAll(mesh, requests)
    await waitUntil(() => primary.stats().sessions === 2 && running.produced.every((n) => n >= 3), {
      events: [{ target: running.progress, type: 'token' }], timeoutMs: 60_000, what: 'two sessions a few steps in'
    })
    const wrongSpan = await primary.drain(world.peer(3), { identity: identity(4) })
    assert.deepEqual(wrongSpan.moved, [])
    assert.deepEqual(wrongSpan.failed.map((f) => f.code), ['ERR_WRONG_SPAN', 'ERR_WRONG_SPAN'])
    const wrongModel = await primary.drain(world.peer(6), { identity: identity(4) })
    assert.deepEqual(wrongModel.failed.map((f) => f.code), ['ERR_WRONG_MODEL', 'ERR_WRONG_MODEL'])
    // nothing was held anywhere, and both sessions are still served by the primary
    for (const server of [world.servers[2], otherModel]) {
      assert.equal(server.stats().adopted, 0)
      assert.equal(server.stats().handoffs.in, 0)
    }
    assert.equal(primary.stats().sessions, 2)
    const stepsBefore = primary.stats().steps
    await waitUntil(() => primary.stats().steps >= stepsBefore + 4, { timeoutMs: 60_000, what: 'the primary still running both sessions' })
    // a wrong signer is refused before anything is sent
    await assert.rejects(primary.drain(world.peer(5), { identity: identity(1) }), { code: 'ERR_INVALID_INPUT' })
    const moved = await primary.drain(world.peer(5), { identity: identity(4) })
    assert.equal(moved.moved.length, 2, JSON.stringify(moved.failed))
    const results = await running.results
    for (const [i, result] of results.entries()) {
      assertSameRun(result, expected[i], `generation ${i}`)
      assert.deepEqual(result.failovers, [])
      assert.deepEqual(result.handoffs?.map((h) => [h.from, h.to]), [[world.peer(4).toString(), world.peer(5).toString()]])
    }
  } finally {
    await mesh.close()
    await stopAll(primary, otherModel, target)
  }
})

test('a target that fails after the whole state arrived: the source keeps serving the session as before, nothing replayed', async () => {
  // node 6 takes the offer and every record, then refuses instead of adopting
  const fakeTarget = world.swarm.nodes[6].mesh.libp2p
  let records = 0
  await fakeTarget.handle(HANDOFF_PROTOCOL, async (stream, connection) => {
    const wire = new HandoffWire(new MessageChannel(HANDOFF_PROTOCOL, stream, connection.remotePeer, 2 << 20))
    const read = { signal: AbortSignal.timeout(30_000), timeoutMs: 10_000 }
    try {
      await wire.expect('offer', read)
      await wire.sendControl({ accept: { windowBytes: 4 << 20 } }, AbortSignal.timeout(10_000))
      for (;;) {
        const message = await wire.receive(read)
        if (message.kind !== 'record') break
        records++
        // the trailer (record type 3) is the last record of a state
        if (message.record[0] === 3) break
      }
      await wire.sendControl({ error: { code: 'ERR_USXF_SIGNATURE', message: 'refused after the state arrived' } }, AbortSignal.timeout(10_000))
      await wire.close(AbortSignal.timeout(10_000))
    } catch {
      wire.abort(new Error('done'))
    }
  })
  const primary = await serve(4, SPANS[1])
  const mesh = await openMesh([4])
  try {
    const requests = requestsFor([7])
    const [expected] = await expectedRuns(requests)
    const running = generateAll(mesh, requests)
    await waitUntil(() => primary.stats().sessions === 1 && running.produced[0] >= 4, {
      events: [{ target: running.progress, type: 'token' }], timeoutMs: 60_000, what: 'the session a few steps in'
    })
    const drained = await primary.drain(world.peer(6), { identity: identity(4) })
    assert.deepEqual(drained.moved, [])
    assert.deepEqual(drained.failed.map((f) => f.code), ['ERR_USXF_SIGNATURE'])
    assert.ok(records >= 3, `the whole state was sent (${records} records)`)
    const [result] = await running.results
    assertSameRun(result, expected, 'the generation')
    assert.deepEqual(result.failovers, [])
    assert.equal(result.handoffs, undefined)
    assert.equal(primary.stats().handoffs.out, 0)
  } finally {
    await mesh.close()
    await fakeTarget.unhandle(HANDOFF_PROTOCOL)
    await stopAll(primary)
  }
})

/** A span cache of `positions` positions with arbitrary contents, as a layer server of layers 2-3 holds. */
function spanCache (positions: number): KvCache {
  const spec = manifest.spec
  const cache = new KvCache({ layerStart: SPANS[1].start, layerEnd: SPANS[1].end, numKvHeads: spec.numKvHeads, headDim: spec.headDim })
  const fill = (seed: number): Float32Array => Float32Array.from({ length: spec.numKvHeads * positions * spec.headDim }, (_, i) => Math.sin(i * 0.37 + seed))
  cache.update(positions, [fill(1)], [fill(2)])
  return cache
}

/**
 * Hands a state to `target` from node 0 as a hand-off source would, optionally tampered with:
 * resolves with the target's `adopted` or rejects with its refusal.
 */
async function handTo (target: PeerId, options: { client: PeerId, sessionId: string, positions: number, statePositions?: number, signer?: UsxfSigner, tamper?: (record: Uint8Array, index: number) => void }): Promise<void> {
  const signal = AbortSignal.timeout(30_000)
  const wire = await HandoffWire.open(world.swarm.nodes[0].mesh.libp2p, target, { dialMs: 10_000, signal })
  try {
    await wire.sendControl({
      offer: {
        handoffId: new Uint8Array(16).fill(7),
        clientPeer: options.client.toString(),
        sessionId: options.sessionId,
        configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>,
        weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>,
        layerStart: SPANS[1].start,
        layerEnd: SPANS[1].end,
        positions: options.positions,
        nextStep: 3,
        maxLength: 256
      }
    }, signal)
    await wire.expect('accept', { signal, timeoutMs: 10_000 })
    const cache = spanCache(options.statePositions ?? options.positions)
    const encoder = new UsxfEncoder(kvStateInput(manifest, extractKv([cache])), { signer: options.signer ?? identity(0), quantization: 'none', chunkBytes: 4096, headroom: 1 })
    let index = 0
    for await (const record of encoder.records()) {
      options.tamper?.(record, index++)
      await wire.sendRecord(record, signal)
    }
    await wire.expect('adopted', { signal, timeoutMs: 10_000 }, true)
  } finally {
    wire.abort(new Error('done'))
  }
}

async function inferExchange (channel: MessageChannel, request: InferRequest): Promise<InferResponse> {
  await channel.send(InferRequest.encode(request), AbortSignal.timeout(10_000))
  return InferResponse.decode(await channel.receive({ timeoutMs: 10_000 }))
}

function resumeRequest (sessionId: string): InferRequest {
  return { open: { sessionId, configSha256: hexToBytes(manifest.configSha256) as Uint8Array<ArrayBuffer>, weightsSha256: hexToBytes(manifest.weightsSha256) as Uint8Array<ArrayBuffer>, layerStart: SPANS[1].start, layerEnd: SPANS[1].end, maxLength: 256, resume: true } }
}

test('the target verifies a handed-off state (checksum, signer, length) and holds nothing it refused; only the client resumes what it adopted', async () => {
  const target = await serve(5, SPANS[1])
  const client = world.peer(7)
  try {
    const refusals: Array<[string, Parameters<typeof handTo>[1]]> = [
      ['ERR_USXF_CHECKSUM', { client, sessionId: 's-1', positions: 64, tamper: (record, i) => { if (i === 2) record[record.byteLength - 100] ^= 0x10 } }],
      ['ERR_USXF_PRODUCER', { client, sessionId: 's-1', positions: 64, signer: identity(1) }],
      ['ERR_USXF_SHAPE_MISMATCH', { client, sessionId: 's-1', positions: 64, statePositions: 65 }]
    ]
    for (const [code, options] of refusals) {
      await assert.rejects(handTo(world.peer(5), options), { code }, code)
      assert.equal(target.stats().adopted, 0, `${code}: nothing held`)
      assert.equal(target.stats().handoffs.in, 0)
    }
    await handTo(world.peer(5), { client, sessionId: 's-1', positions: 64 })
    assert.equal(target.stats().adopted, 1)
    assert.equal(target.stats().handoffs.in, 1)
    // the key is the client's peer id and the session id: another peer (node 0, even the one that sent it) finds nothing
    const stranger = await openChannel(world.swarm.nodes[0].mesh.libp2p, world.peer(5), INFER_PROTOCOL, { maxMessageBytes: 1 << 20 })
    const refused = await inferExchange(stranger, resumeRequest('s-1'))
    assert.equal(refused.error?.code, 'ERR_NOT_ADOPTED')
    stranger.abort(new Error('done'))
    // the client binds it and continues at position 64, step 3
    const own = await openChannel(world.swarm.nodes[7].mesh.libp2p, world.peer(5), INFER_PROTOCOL, { maxMessageBytes: 1 << 20 })
    const opened = await inferExchange(own, resumeRequest('s-1'))
    assert.deepEqual([opened.opened?.positions, opened.opened?.nextStep], [64, 3])
    const hidden = new Float32Array(manifest.spec.hiddenSize).fill(0.5)
    const early = await inferExchange(own, { step: { sessionId: 's-1', frame: encodeActivationFrame({ step: 0, positionStart: 0, rows: 1, width: manifest.spec.hiddenSize, values: hidden }) as Uint8Array<ArrayBuffer> } })
    assert.equal(early.error?.code, 'ERR_OUT_OF_ORDER')
    const step = await inferExchange(own, { step: { sessionId: 's-1', frame: encodeActivationFrame({ step: 3, positionStart: 64, rows: 1, width: manifest.spec.hiddenSize, values: hidden }) as Uint8Array<ArrayBuffer> } })
    assert.ok(step.result != null, JSON.stringify(step.error))
    assert.deepEqual(target.stats().handoffs, { out: 0, in: 1, resumed: 1, expired: 0 })
    own.abort(new Error('done'))
  } finally {
    await stopAll(target)
  }
})

test('an adopted session its client does not resume within the idle timeout is dropped', async () => {
  const target = await serve(8, SPANS[1], { limits: { idleTimeoutMs: 300 } })
  try {
    await handTo(world.peer(8), { client: world.peer(7), sessionId: 'gone', positions: 10 })
    assert.equal(target.stats().adopted, 1)
    await waitUntil(() => target.stats().handoffs.expired === 1, { timeoutMs: 20_000, recheckMs: 50, what: 'the adopted session to expire' })
    assert.equal(target.stats().adopted, 0)
  } finally {
    await stopAll(target)
  }
})

test('when the resume fails the client falls back to replaying the span into a replacement', async () => {
  // node 7 opens sessions and answers every step "moved to node 5", where nothing was handed over
  const fake = world.swarm.nodes[7].mesh.libp2p
  await fake.handle(INFER_PROTOCOL, async (stream, connection) => {
    const channel = new MessageChannel(INFER_PROTOCOL, stream, connection.remotePeer, 1 << 20)
    try {
      for (;;) {
        const request = InferRequest.decode(await channel.receive({ timeoutMs: 30_000 }))
        const response: InferResponse = request.open != null
          ? { opened: { sessionId: request.open.sessionId, maxLength: request.open.maxLength, hiddenSize: manifest.spec.hiddenSize, maxStepRows: request.open.maxLength } }
          : { error: { code: 'ERR_SESSION_MOVED', message: `session moved to ${world.peer(5).toString()}`, movedTo: world.peer(5).toString() } }
        await channel.send(InferResponse.encode(response), AbortSignal.timeout(10_000))
      }
    } catch {
      channel.abort(new Error('done'))
    }
  })
  const replacement = await serve(5, SPANS[1])
  const mesh = await openMesh([7, 5])
  try {
    const requests = requestsFor([6])
    const [expected] = await expectedRuns(requests)
    const result = await mesh.generate(requests[0])
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.handoffs, undefined)
    assert.deepEqual(result.failovers.map((f) => [f.from, f.to, f.code]), [[world.peer(7).toString(), world.peer(5).toString(), 'ERR_SESSION_MOVED']])
    assert.equal(replacement.stats().errors.ERR_NOT_ADOPTED, 1, 'the resume was tried first')
  } finally {
    await mesh.close()
    await fake.unhandle(INFER_PROTOCOL)
    await stopAll(replacement)
  }
})

test('the hand-off protocol is registered beside the inference protocol while serving', async () => {
  const server = await serve(8, SPANS[1])
  try {
    assert.ok(world.swarm.nodes[8].mesh.libp2p.getProtocols().includes(HANDOFF_PROTOCOL))
  } finally {
    await stopAll(server)
  }
  assert.ok(!world.swarm.nodes[8].mesh.libp2p.getProtocols().includes(HANDOFF_PROTOCOL))
})
