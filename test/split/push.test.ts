import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { LocalModel } from '../../src/inference/index.ts'
import { MessageChannel, openChannel } from '../../src/mesh/index.ts'
import { decodeActivationFrame, encodeActivationFrame } from '../../src/usxf/index.ts'
import { InferPush, InferPushReply, InferRequest, InferResponse } from '../../src/pb/infer.ts'
import { createLayerServer, MeshModel, PUSH_PROTOCOL, type LayerServer, type MeshHop } from '../../src/split/index.ts'
import { PushChain } from '../../src/split/push-client.ts'
import { maxAbsDiff, STORIES_DIR, STORIES_SKIP } from '../model/fixtures.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'
import { messages, tappedLibp2p } from './wire-tap.ts'

// Nodes 1-3 serve the three middle spans, node 4 a second server for layers 2-3 (the replacement),
// node 5 serves nothing (a stranger that forges pushes).
let world: SplitWorld
let local: LocalModel
let localSplit: LocalModel
const STRANGER = 5

before(async () => {
  world = await splitWorld([...SPANS, SPANS[1]], { extraNodes: 1 })
  local = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1 })
  localSplit = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1, splits: [1, 2, 3, 4] })
})

after(async () => {
  await local?.close()
  await localSplit?.close()
  await world?.close()
})

function chain (middle: number[] = [2]): MeshHop[] {
  return [
    { ...SPANS[0], peers: [world.peer(1)] },
    { ...SPANS[1], peers: middle.map((node) => world.peer(node)) },
    { ...SPANS[2], peers: [world.peer(3)] }
  ]
}

async function openMesh (options: { quantization?: 'none' | 'f16', push?: boolean, middle?: number[], libp2p?: Libp2p } = {}): Promise<MeshModel> {
  return await MeshModel.open({ libp2p: options.libp2p ?? world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(options.middle), quantization: options.quantization ?? 'none', threads: 1, push: options.push ?? true })
}

async function withLogits (generate: (onLogits: (position: number, row: Float32Array) => void) => Promise<{ tokens: number[] }>): Promise<{ tokens: number[], logits: Float32Array[] }> {
  const logits: Float32Array[] = []
  const { tokens } = await generate((position, row) => { logits[position] = row.slice() })
  return { tokens, logits }
}

const pushes = (): number[] => world.servers.map((server) => server.stats().pushes.sent)

test('with push on, split generation over 3 servers equals local generation token for token (f32: logits bit-exact)', async () => {
  const mesh = await openMesh()
  try {
    for (const seed of [1, 2]) {
      const request = { promptIds: promptIds(10 + seed * 4, seed), maxTokens: 20, stopTokens: [] }
      const before = pushes()
      const expected = await withLogits(async (onLogits) => await localSplit.generate({ ...request, onLogits }))
      const unsplit = await local.generate(request)
      let report
      const got = await withLogits(async (onLogits) => {
        const result = await mesh.generate({ ...request, onLogits })
        report = result.push
        assert.deepEqual(result.failovers, [])
        return result
      })
      assert.deepEqual(got.tokens, expected.tokens)
      assert.deepEqual(got.tokens, unsplit.tokens)
      for (let i = 0; i < got.logits.length; i++) assert.equal(maxAbsDiff(got.logits[i], expected.logits[i]), 0, `position ${i}`)
      // every step went server to server: hops 1 and 2 pushed once per step, the last hop never
      assert.deepEqual(report, { steps: 20, disabled: null, fallback: null })
      const after = pushes()
      assert.equal(after[0] - before[0], 20)
      assert.equal(after[1] - before[1], 20)
      assert.equal(after[2] - before[2], 0)
    }
  } finally {
    await mesh.close()
  }
})

test('with push on and f16 activations the output equals the relayed f16 run exactly, and local generation within the f16 tolerance', async (t) => {
  const pushed = await openMesh({ quantization: 'f16' })
  const relayed = await openMesh({ quantization: 'f16', push: false })
  try {
    const request = { promptIds: promptIds(13, 5), maxTokens: 24, stopTokens: [] }
    const expected = await withLogits(async (onLogits) => await localSplit.generate({ ...request, onLogits }))
    const viaRelay = await withLogits(async (onLogits) => await relayed.generate({ ...request, onLogits }))
    const viaPush = await withLogits(async (onLogits) => await pushed.generate({ ...request, onLogits }))
    assert.deepEqual(viaPush.tokens, viaRelay.tokens)
    // the servers see the same f16 rows either way: pushing changes the route, not the numbers
    for (let i = 0; i < viaPush.logits.length; i++) assert.equal(maxAbsDiff(viaPush.logits[i], viaRelay.logits[i]), 0, `position ${i}`)
    assert.deepEqual(viaPush.tokens, expected.tokens)
    let diff = 0
    for (let i = 0; i < viaPush.logits.length; i++) diff = Math.max(diff, maxAbsDiff(viaPush.logits[i], expected.logits[i]))
    t.diagnostic(`f16 push: max abs logit difference to local ${diff.toExponential(2)}`)
    assert.ok(diff < 5e-2, `f16 logits within 5e-2 of local (${diff})`)
  } finally {
    await pushed.close()
    await relayed.close()
  }
})

test('push is off while verification is on, and for a single middle hop (reported)', async () => {
  const verified = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([2, 4]), quantization: 'none', threads: 1, push: true, verify: { rate: 1, canaries: 0 } })
  try {
    const before = pushes()
    const result = await verified.generate({ promptIds: promptIds(6, 2), maxTokens: 3, stopTokens: [] })
    assert.deepEqual(result.push, { steps: 0, disabled: 'verification', fallback: null })
    assert.deepEqual(pushes(), before)
  } finally {
    await verified.close()
  }
  // head 0-2 and tail 3-5 leave one middle span, 2-3 (node 2): nothing to push between
  const single = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 2, tailLayers: 2, chain: [{ ...SPANS[1], peers: [world.peer(2)] }], quantization: 'none', threads: 1, push: true })
  try {
    const request = { promptIds: promptIds(6, 3), maxTokens: 3, stopTokens: [] }
    const result = await single.generate(request)
    assert.deepEqual(result.push, { steps: 0, disabled: 'single-hop', fallback: null })
    assert.deepEqual(result.tokens, (await local.generate(request)).tokens)
  } finally {
    await single.close()
  }
})

function concat (chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks))
}

test('wire inspection: the client\'s streams and the server-to-server pushes carry activation frames only, no token ids or text', async () => {
  // servers on the stranger node and the spare node, their outbound (push) streams tapped
  const serverStreams: Array<{ protocol: string, chunks: Uint8Array[] }> = []
  const clientStreams: Array<{ protocol: string, chunks: Uint8Array[] }> = []
  const spare: LayerServer[] = []
  try {
    // a fresh 1-2 server on node 5, its outbound streams tapped, pushes to node 4 (2-3), which pushes to node 3 (3-4)
    const first = createLayerServer({ libp2p: tappedLibp2p(world.swarm.nodes[STRANGER].mesh.libp2p, serverStreams), dataDir: world.dataDir, model: world.model, layers: SPANS[0], threads: 1 })
    await first.start()
    spare.push(first)
    const hops: MeshHop[] = [
      { ...SPANS[0], peers: [world.peer(STRANGER)] },
      { ...SPANS[1], peers: [world.peer(4)] },
      { ...SPANS[2], peers: [world.peer(3)] }
    ]
    const mesh = await MeshModel.open({ libp2p: tappedLibp2p(world.swarm.nodes[0].mesh.libp2p, clientStreams), dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: hops, quantization: 'none', threads: 1, push: true })
    const prompt = promptIds(9, 11)
    let result
    try {
      result = await mesh.generate({ promptIds: prompt, maxTokens: 6, stopTokens: [] })
    } finally {
      await mesh.close()
    }
    assert.equal(result.push?.steps, 6)
    const pushStreams = serverStreams.filter((s) => s.protocol === PUSH_PROTOCOL)
    assert.equal(pushStreams.length, 1, 'the first hop opened one push stream for the session')
    const width = world.servers[0].manifest?.spec.hiddenSize as number
    let frames = 0
    for (const stream of pushStreams) {
      for (const message of messages(concat(stream.chunks))) {
        const push = InferPush.decode(message)
        assert.equal(push.clientPeer, world.peer(0).toString())
        // the whole message is the frame plus the two ids: nothing else rides along
        const frame = decodeActivationFrame(new Uint8Array(push.frame), { width })
        assert.equal(frame.width, width)
        frames++
      }
    }
    assert.equal(frames, 6)
    for (const stream of clientStreams) {
      for (const message of messages(concat(stream.chunks))) {
        const request = InferRequest.decode(message)
        if (request.step == null) continue
        if (request.step.frame.byteLength > 0) decodeActivationFrame(new Uint8Array(request.step.frame), { width })
      }
    }
    // no token ids (as 32- or 16-bit runs) on any stream either side wrote (the prompt is ids: there is no text to leak)
    const all = [...serverStreams, ...clientStreams].map((s) => concat(s.chunks))
    for (const bytes of all) {
      for (const ids of [Int32Array.from(prompt), Uint16Array.from(prompt)]) {
        assert.ok(!Buffer.from(bytes).includes(Buffer.from(ids.buffer)), `no run of prompt ids (${ids.BYTES_PER_ELEMENT * 8}-bit)`)
      }
      assert.ok(!Buffer.from(bytes).includes(Buffer.from(Int32Array.from(result.tokens).buffer)), 'no run of generated ids')
    }
  } finally {
    for (const server of spare) await server.stop()
  }
})

/** One push to `to` from `from`'s libp2p: the receiver's reply. */
async function forge (from: Libp2p, to: PeerId, client: PeerId, sessionId: string, step: number, positionStart: number): Promise<InferPushReply> {
  const width = world.servers[0].manifest?.spec.hiddenSize as number
  const channel = await openChannel(from, to, PUSH_PROTOCOL, { maxMessageBytes: 1 << 20, dialMs: 5000 })
  try {
    const frame = encodeActivationFrame({ step, positionStart, rows: 1, width, values: new Float32Array(width).fill(0.5) }, { quantization: 'none' })
    await channel.send(InferPush.encode({ clientPeer: client.toString(), sessionId, frame: frame as Uint8Array<ArrayBuffer> }), AbortSignal.timeout(5000))
    return InferPushReply.decode(await channel.receive({ timeoutMs: 5000 }))
  } finally {
    await channel.close(AbortSignal.timeout(5000))
  }
}

test('a forged push (a stranger, the downstream, an unknown session, the real upstream out of order) is refused; the session goes on exactly', async () => {
  const manifest = world.servers[0].manifest
  assert.ok(manifest !== null)
  const width = manifest.spec.hiddenSize
  const client = world.swarm.nodes[0].mesh.libp2p
  const sessionId = 'forge-test-session'
  const pushChain = await PushChain.open({
    libp2p: client, manifest, quantization: 'none', sessionId, maxLength: 16, maxMessageBytes: 1 << 20,
    spans: SPANS, peers: [world.peer(1), world.peer(2), world.peer(3)], dialMs: 5000, replyMs: 10_000, signal: new AbortController().signal
  })
  try {
    const input = (rows: number, seed: number): Float32Array => Float32Array.from({ length: rows * width }, (_, i) => Math.sin(i * 0.37 + seed) * 0.5)
    const first = await pushChain.step(input(4, 1))
    const refusedBefore = world.servers[1].stats().pushes.refused
    // hop 1 (node 2) takes pushes for this session only from node 1, and only step 1 next
    const stranger = await forge(world.swarm.nodes[STRANGER].mesh.libp2p, world.peer(2), world.peer(0), sessionId, 1, 4)
    assert.equal(stranger.error?.code, 'ERR_PUSH_REFUSED')
    const downstream = await forge(world.swarm.nodes[3].mesh.libp2p, world.peer(2), world.peer(0), sessionId, 1, 4)
    assert.equal(downstream.error?.code, 'ERR_PUSH_REFUSED')
    const unknown = await forge(world.swarm.nodes[1].mesh.libp2p, world.peer(2), world.peer(0), 'no-such-session', 1, 4)
    assert.equal(unknown.error?.code, 'ERR_PUSH_REFUSED', 'an unknown session gets the same answer as a foreign one')
    const outOfOrder = await forge(world.swarm.nodes[1].mesh.libp2p, world.peer(2), world.peer(0), sessionId, 7, 4)
    assert.equal(outOfOrder.error?.code, 'ERR_OUT_OF_ORDER')
    const garbage = await (async () => {
      const channel = await openChannel(world.swarm.nodes[STRANGER].mesh.libp2p, world.peer(2), PUSH_PROTOCOL, { maxMessageBytes: 1 << 20, dialMs: 5000 })
      await channel.send(new Uint8Array([0xff, 0xff, 0xff]), AbortSignal.timeout(5000))
      const reply = InferPushReply.decode(await channel.receive({ timeoutMs: 5000 }))
      await channel.close(AbortSignal.timeout(5000))
      return reply
    })()
    assert.equal(garbage.error?.code, 'ERR_INVALID_MESSAGE')
    assert.equal(world.servers[1].stats().pushes.refused - refusedBefore, 5)
    // the real chain goes on as if nothing happened
    const second = await pushChain.step(input(1, 2))
    const third = await pushChain.step(input(1, 3))
    // the same rows relayed by the client through fresh sessions give the same outputs, bit for bit
    const reference = await relayedOutputs([input(4, 1), input(1, 2), input(1, 3)])
    assert.equal(maxAbsDiff(first, reference[0]), 0)
    assert.equal(maxAbsDiff(second, reference[1]), 0)
    assert.equal(maxAbsDiff(third, reference[2]), 0)
  } finally {
    await pushChain.close()
  }
})

/** The chain's outputs for these steps, relayed by the client hop by hop over plain sessions. */
async function relayedOutputs (steps: Float32Array[]): Promise<Float32Array[]> {
  const manifest = world.servers[0].manifest
  assert.ok(manifest !== null)
  const width = manifest.spec.hiddenSize
  const client = world.swarm.nodes[0].mesh.libp2p
  const channels = await Promise.all([1, 2, 3].map(async (node) => await openChannel(client, world.peer(node), '/permagent/infer/1.0.0', { maxMessageBytes: 1 << 20, dialMs: 5000 })))
  const exchange = async (i: number, request: InferRequest): Promise<InferResponse> => {
    await channels[i].send(InferRequest.encode(request), AbortSignal.timeout(5000))
    const response = InferResponse.decode(await channels[i].receive({ timeoutMs: 10_000 }))
    assert.equal(response.error, undefined, response.error?.message)
    return response
  }
  const sessionId = 'relayed-reference'
  try {
    for (let i = 0; i < 3; i++) {
      await exchange(i, { open: { sessionId, configSha256: Buffer.from(manifest.configSha256, 'hex'), weightsSha256: Buffer.from(manifest.weightsSha256, 'hex'), layerStart: SPANS[i].start, layerEnd: SPANS[i].end, maxLength: 16 } })
    }
    const outputs: Float32Array[] = []
    let position = 0
    for (const [step, input] of steps.entries()) {
      let hidden = input
      const rows = input.length / width
      for (let i = 0; i < 3; i++) {
        const frame = encodeActivationFrame({ step, positionStart: position, rows, width, values: hidden }, { quantization: 'none' })
        const response = await exchange(i, { step: { sessionId, frame: frame as Uint8Array<ArrayBuffer> } })
        hidden = decodeActivationFrame(new Uint8Array(response.result?.frame ?? new Uint8Array(0)), { width }).values
      }
      position += rows
      outputs.push(hidden)
    }
    return outputs
  } finally {
    for (const channel of channels) await channel.close(AbortSignal.timeout(5000))
  }
}

test('a server killed mid-generation with push on: the chain is rebuilt relayed from the head outputs and the output is unchanged', async (t) => {
  const prompt = promptIds(14, 4)
  const request = { promptIds: prompt, maxTokens: 24, stopTokens: [] }
  const expected = await withLogits(async (onLogits) => await localSplit.generate({ ...request, onLogits }))
  const mesh = await openMesh({ middle: [2, 4] })
  const victim = world.swarm.nodes[2]
  let stopped: Promise<void> | undefined
  try {
    let result
    const got = await withLogits(async (onLogits) => {
      result = await mesh.generate({
        ...request,
        onLogits,
        onToken: (event) => {
          if (event.index !== 8) return
          // kill the middle server: its server stops and every connection it has is reset at once
          stopped = world.servers[1].stop()
          for (const connection of victim.mesh.libp2p.getConnections()) connection.abort(new Error('killed'))
        }
      })
      return result
    })
    assert.ok(result !== undefined)
    const { failovers, push } = result as { failovers: Array<{ hop: number, from: string, to: string, replayed: number }>, push: { steps: number, fallback: { hop: number | null } | null } }
    assert.deepEqual(got.tokens, expected.tokens)
    assert.equal(failovers.length, 1)
    assert.equal(failovers[0].hop, 1)
    assert.equal(failovers[0].from, world.peer(2).toString())
    assert.equal(failovers[0].to, world.peer(4).toString())
    assert.equal(failovers[0].replayed, prompt.length + 8, 'the prompt and the 8 tokens fed before the kill were replayed')
    assert.equal(push.fallback?.hop, 1)
    assert.ok(push.steps >= 9, `pushed until the kill (${push.steps} steps)`)
    let diff = 0
    for (let i = 0; i < got.logits.length; i++) diff = Math.max(diff, maxAbsDiff(got.logits[i], expected.logits[i]))
    t.diagnostic(`after the push fallback: max abs logit difference to the uninterrupted run ${diff.toExponential(2)}`)
    assert.ok(diff < 1e-4, `logits within 1e-4 of the uninterrupted run (${diff})`)
  } finally {
    await stopped
    await mesh.close()
    // node 2 serves its span again for the tests after this one
    const restarted = createLayerServer({ libp2p: victim.mesh.libp2p, dataDir: world.dataDir, model: world.model, layers: SPANS[1], threads: 1 })
    await restarted.start()
    world.servers[1] = restarted
  }
})

test('stories260K over 3 servers with push on: f32 gives the local tokens and text exactly, logits bit-exact; f16 agreement reported', { skip: STORIES_SKIP }, async (t) => {
  const stories = await splitWorld(SPANS, { checkpoint: STORIES_DIR, model: 'stories' })
  const storiesLocal = await LocalModel.open({ dataDir: stories.dataDir, name: 'stories', threads: 1, splits: [1, 2, 3, 4] })
  const meshes: MeshModel[] = []
  try {
    const open = async (quantization: 'none' | 'f16'): Promise<MeshModel> => {
      const mesh = await MeshModel.open({ libp2p: stories.swarm.nodes[0].mesh.libp2p, dataDir: stories.dataDir, name: 'stories', headLayers: 1, tailLayers: 1, chain: SPANS.map((s, i) => ({ ...s, peers: [stories.peer(i + 1)] })), quantization, threads: 1, push: true })
      meshes.push(mesh)
      return mesh
    }
    const request = { promptIds: [1], maxTokens: 48, stopTokens: [] }
    const expected = await withLogits(async (onLogits) => await storiesLocal.generate({ ...request, onLogits }))
    const expectedText = (await storiesLocal.generate(request)).text
    const exact = await open('none')
    let text = ''
    let steps = 0
    const got = await withLogits(async (onLogits) => {
      const result = await exact.generate({ ...request, onLogits })
      text = result.text
      steps = result.push?.steps ?? 0
      return result
    })
    assert.equal(steps, 48)
    assert.deepEqual(got.tokens, expected.tokens)
    assert.equal(text, expectedText)
    for (let i = 0; i < got.logits.length; i++) assert.equal(maxAbsDiff(got.logits[i], expected.logits[i]), 0, `position ${i}`)
    const half = await (await open('f16')).generate(request)
    let same = 0
    while (same < half.tokens.length && half.tokens[same] === expected.tokens[same]) same++
    t.diagnostic(`stories260K, push, f16 activations: ${same}/${expected.tokens.length} greedy tokens identical before the first divergence`)
    assert.ok(same >= 16, `f16 activations agree on the first ${same} tokens`)
  } finally {
    for (const mesh of meshes) await mesh.close()
    await storiesLocal.close()
    await stories.close()
  }
})

test('the push leg\'s limits: a pushed step whose input never comes fails ERR_PUSH_TIMEOUT, a push nobody takes fails ERR_PUSH_FAILED; the server goes on serving', async () => {
  const manifest = world.servers[0].manifest
  assert.ok(manifest !== null)
  const width = manifest.spec.hiddenSize
  // a server for 2-3 on the stranger node with short push deadlines
  const server = createLayerServer({ libp2p: world.swarm.nodes[STRANGER].mesh.libp2p, dataDir: world.dataDir, model: world.model, layers: SPANS[1], threads: 1, limits: { pushWaitMs: 300, pushTimeoutMs: 2000 } })
  await server.start()
  const client = world.swarm.nodes[0].mesh.libp2p
  const channel = await openChannel(client, world.peer(STRANGER), '/permagent/infer/1.0.0', { maxMessageBytes: 1 << 20, dialMs: 5000 })
  const exchange = async (request: InferRequest): Promise<InferResponse> => {
    await channel.send(InferRequest.encode(request), AbortSignal.timeout(5000))
    return InferResponse.decode(await channel.receive({ timeoutMs: 10_000 }))
  }
  const identity = { configSha256: Buffer.from(manifest.configSha256, 'hex'), weightsSha256: Buffer.from(manifest.weightsSha256, 'hex'), layerStart: SPANS[1].start, layerEnd: SPANS[1].end, maxLength: 16 }
  const frame = (step: number, position: number): Uint8Array<ArrayBuffer> => encodeActivationFrame({ step, positionStart: position, rows: 1, width, values: new Float32Array(width).fill(0.25) }, { quantization: 'none' }) as Uint8Array<ArrayBuffer>
  try {
    // upstream node 1 never pushes for this session
    const opened = await exchange({ open: { sessionId: 'waits', ...identity, upstream: world.peer(1).toString() } })
    assert.equal(opened.opened?.push, true)
    const waited = await exchange({ step: { sessionId: 'waits', frame: new Uint8Array(0), pushedStep: 0 } })
    assert.equal(waited.error?.code, 'ERR_PUSH_TIMEOUT')
    // a frame on a pushed session, or a pushed step out of order, is refused at once
    assert.equal((await exchange({ step: { sessionId: 'waits', frame: frame(0, 0) } })).error?.code, 'ERR_INFER_PROTOCOL')
    assert.equal((await exchange({ step: { sessionId: 'waits', frame: new Uint8Array(0), pushedStep: 3 } })).error?.code, 'ERR_OUT_OF_ORDER')
    assert.equal((await exchange({ close: { sessionId: 'waits' } })).closed?.sessionId, 'waits')
    // push_to names the client node, which serves no push protocol: the push fails, typed
    await exchange({ open: { sessionId: 'pushes', ...identity, pushTo: world.peer(0).toString() } })
    const failed = await exchange({ step: { sessionId: 'pushes', frame: frame(0, 0) } })
    assert.equal(failed.error?.code, 'ERR_PUSH_FAILED')
    assert.equal((await exchange({ close: { sessionId: 'pushes' } })).closed?.sessionId, 'pushes')
    // bad peer ids are refused at open
    assert.equal((await exchange({ open: { sessionId: 'bad', ...identity, pushTo: 'not-a-peer-id' } })).error?.code, 'ERR_INVALID_MESSAGE')
    assert.equal((await exchange({ open: { sessionId: 'self', ...identity, upstream: world.peer(STRANGER).toString() } })).error?.code, 'ERR_INVALID_MESSAGE')
    // and a plain session on the same stream runs as ever
    await exchange({ open: { sessionId: 'plain', ...identity } })
    const result = await exchange({ step: { sessionId: 'plain', frame: frame(0, 0) } })
    assert.equal(result.error, undefined, result.error?.message)
    assert.equal(decodeActivationFrame(new Uint8Array(result.result?.frame ?? new Uint8Array(0)), { width }).rows, 1)
    assert.equal(server.stats().errors.ERR_PUSH_TIMEOUT, 1)
  } finally {
    await channel.close(AbortSignal.timeout(5000))
    await server.stop()
  }
})

test('a server drained mid-generation with push on: the client falls back to relaying, rebuilds the chain without it, output unchanged', async () => {
  const prompt = promptIds(12, 6)
  const request = { promptIds: prompt, maxTokens: 20, stopTokens: [] }
  const expected = await localSplit.generate(request)
  const mesh = await openMesh({ middle: [2, 4] })
  const draining = world.servers[1]
  let drained: Promise<unknown> | undefined
  try {
    const result = await mesh.generate({
      ...request,
      onToken: (event) => {
        if (event.index !== 6) return
        drained = draining.drain(world.peer(4), { identity: world.swarm.nodes[2].identity, clientWaitMs: 0 })
      }
    })
    assert.ok(drained !== undefined)
    const report = await drained as { moved: unknown[] }
    assert.equal(report.moved.length, 1, 'the push session was handed off like any other')
    assert.deepEqual(result.tokens, expected.tokens)
    assert.deepEqual(result.failovers.map((f) => [f.hop, f.from, f.to]), [[1, world.peer(2).toString(), world.peer(4).toString()]])
    assert.equal(result.push?.fallback?.hop, 1)
  } finally {
    await drained?.catch(() => {})
    await mesh.close()
    await draining.stop()
    const restarted = createLayerServer({ libp2p: world.swarm.nodes[2].mesh.libp2p, dataDir: world.dataDir, model: world.model, layers: SPANS[1], threads: 1 })
    await restarted.start()
    world.servers[1] = restarted
  }
})

test('a hop that stalls at open with push on is caught by the reply deadline; the generation is relayed around it', async () => {
  const stalled = world.swarm.nodes[STRANGER].mesh.libp2p
  await stalled.handle('/permagent/infer/1.0.0', async (stream, connection) => {
    const channel = new MessageChannel('/permagent/infer/1.0.0', stream, connection.remotePeer, 1 << 20)
    // reads whatever comes and answers nothing, until the client gives up on it
    try { for (;;) await channel.receive({ timeoutMs: 60_000 }) } catch {}
  })
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([STRANGER, 4]), quantization: 'none', threads: 1, push: true, timeouts: { replyMs: 1500 } })
  try {
    const request = { promptIds: promptIds(9, 8), maxTokens: 6, stopTokens: [] }
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, (await localSplit.generate(request)).tokens)
    assert.deepEqual(result.failovers.map((f) => [f.hop, f.from, f.to, f.code]), [[1, world.peer(STRANGER).toString(), world.peer(4).toString(), 'ERR_REPLY_TIMEOUT']])
    assert.deepEqual(result.push, { steps: 0, disabled: null, fallback: { step: 0, hop: 1, code: 'ERR_REPLY_TIMEOUT' } })
  } finally {
    await mesh.close()
    await stalled.unhandle('/permagent/infer/1.0.0')
  }
})
