import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { meshRunRoutes } from '../../node/api/routes/mesh-run.ts'
import { startControlApi } from '../../node/api/server.ts'
import { LocalModel } from '../../src/inference/index.ts'
import { importModel } from '../../src/model/index.ts'
import { silentLogger } from '../../src/util/index.ts'
import { decodeActivationFrame } from '../../src/usxf/index.ts'
import { InferRequest } from '../../src/pb/infer.ts'
import { INFER_PROTOCOL, MeshModel, requestKind, type MeshHop, type MeshModelOptions } from '../../src/split/index.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'
import { startLiarProxy, type LiarProxy } from './liar-proxy.ts'
import { messages, tappedLibp2p } from './wire-tap.ts'

// Nodes 1-3 serve the three middle spans; nodes 4 and 5 are more honest servers for layers 2-3;
// node 6 serves nothing itself: a test-only proxy forwards its sessions to node 5's real server
// and perturbs the result frames it chooses (the liar). The product server has no lie switch.
const HONEST = 4
const BACKEND = 5
const LIAR = 6
const HIDDEN = 64

let world: SplitWorld
let local: LocalModel
let liar: LiarProxy

before(async () => {
  world = await splitWorld([...SPANS, SPANS[1], SPANS[1]], { extraNodes: 1 })
  local = await LocalModel.open({ dataDir: world.dataDir, name: world.model, threads: 1 })
  liar = await startLiarProxy(world.swarm.nodes[LIAR].mesh.libp2p, world.peer(BACKEND), HIDDEN)
})

after(async () => {
  await local?.close()
  await world?.close()
})

function chain (middle: number[], single = false): MeshHop[] {
  return [
    { ...SPANS[0], peers: [world.peer(1)] },
    { ...SPANS[1], peers: (single ? middle.slice(0, 1) : middle).map((node) => world.peer(node)) },
    { ...SPANS[2], peers: [world.peer(3)] }
  ]
}

async function open (middle: number[], options: Partial<MeshModelOptions> = {}): Promise<MeshModel> {
  return await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain(middle), quantization: 'none', threads: 1, ...options })
}

test('without verification the liar changes the output (the control for the tests below)', async () => {
  liar.lieWhen = () => true
  const request = { promptIds: promptIds(12, 21), maxTokens: 16, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([LIAR, HONEST])
  try {
    const result = await mesh.generate(request)
    assert.notDeepEqual(result.tokens, expected.tokens)
    assert.equal(result.faults, undefined)
    assert.equal(result.verification, undefined)
  } finally {
    await mesh.close()
  }
})

test('verification at rate 1 catches the liar on its first step, excludes and reports it; the tokens equal the honest local run', async (t) => {
  liar.lieWhen = () => true
  liar.resetLies()
  const request = { promptIds: promptIds(12, 21), maxTokens: 16, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([LIAR, HONEST, BACKEND], { verify: { rate: 1 } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.faults?.length, 1)
    const [fault] = result.faults
    assert.equal(fault.peer, world.peer(LIAR).toString())
    assert.equal(fault.hop, 1)
    assert.equal(fault.kind, 'step')
    assert.equal(fault.step, 0, 'caught on the prompt step')
    assert.equal(fault.referee, 'local')
    assert.ok(fault.ratio > 1 && fault.maxAbsDiff > 0)
    t.diagnostic(`the liar's difference over its allowance: ${fault.ratio.toFixed(0)} (max abs difference ${fault.maxAbsDiff.toFixed(3)})`)
    // its span went to the next server by the failover path, nothing it said was used
    assert.deepEqual(result.failovers.map((f) => [f.hop, f.from, f.to, f.code]), [[1, world.peer(LIAR).toString(), world.peer(HONEST).toString(), 'ERR_SERVER_FAULTY']])
    const report = result.verification
    assert.ok(report !== undefined)
    assert.equal(report.suspectFrom, null)
    assert.equal(report.regenerated, 0)
    assert.ok(report.hops.every((h) => h.checks > 0 && h.unavailable === 0 || h.hop !== 1))
    assert.deepEqual(mesh.faultyPeers, [world.peer(LIAR).toString()])
    // excluded for the model's lifetime: the next generation does not go near it
    const liesBefore = liar.lies()
    const again = await mesh.generate(request)
    assert.deepEqual(again.tokens, expected.tokens)
    assert.deepEqual(again.faults, [])
    assert.deepEqual(again.failovers, [])
    assert.equal(liar.lies(), liesBefore)
  } finally {
    await mesh.close()
  }
})

test('verification off on an honest chain changes nothing; rate 1 on honest f16 servers finds no fault', async (t) => {
  const request = { promptIds: promptIds(10, 5), maxTokens: 20, stopTokens: [] }
  const plain = await open([HONEST, BACKEND], { quantization: 'f16' })
  const checked = await open([HONEST, BACKEND], { quantization: 'f16', verify: { rate: 1, canaries: 2 } })
  try {
    const off = await plain.generate(request)
    assert.equal(off.faults, undefined)
    assert.equal(off.verification, undefined)
    const on = await checked.generate(request)
    assert.deepEqual(on.tokens, off.tokens)
    assert.deepEqual(on.faults, [])
    assert.deepEqual(on.failovers, [])
    const report = on.verification
    assert.ok(report !== undefined)
    const middle = report.hops[1]
    assert.equal(middle.checks, 20, 'every step of the hop with a second server was checked')
    assert.equal(middle.rowsChecked, 10 + 19)
    assert.ok(report.hops.every((h) => h.canaries === 2), 'two canary probes per hop, answered by the local stages')
    t.diagnostic(`rate 1, f16, 29 positions: ${report.extraRows} extra rows, ${report.extraBytes} extra bytes`)
  } finally {
    await plain.close()
    await checked.close()
  }
})

test('verification unavailable is reported for hops with one server, not skipped silently', async () => {
  const request = { promptIds: promptIds(8, 3), maxTokens: 6, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([HONEST], true), quantization: 'none', threads: 1, verify: { rate: 1 } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    const report = result.verification
    assert.ok(report !== undefined)
    for (const hop of report.hops) {
      assert.equal(hop.checks, 0)
      assert.equal(hop.unavailable, 6, `hop ${hop.hop}: every sampled step reported unavailable`)
    }
  } finally {
    await mesh.close()
  }
})

test('canaries alone catch a liar that lies only on one-row (decode) steps, before it is used', async () => {
  liar.lieWhen = (frame) => frame.rows === 1
  const request = { promptIds: promptIds(9, 8), maxTokens: 12, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([LIAR, HONEST], { verify: { rate: 0, canaries: 3 } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.faults?.length, 1)
    assert.equal(result.faults[0].kind, 'canary')
    assert.equal(result.faults[0].peer, world.peer(LIAR).toString())
    assert.equal(result.faults[0].step, 0, 'the first canary goes before the prompt')
    assert.equal(result.verification?.suspectFrom, null)
  } finally {
    await mesh.close()
  }
})

test('a liar on 1 step in 3 is caught by sampling and canaries within the run; the tainted generation is run again and equals the honest one', async (t) => {
  liar.lieWhen = (frame) => frame.step % 3 === 2
  const request = { promptIds: promptIds(10, 14), maxTokens: 30, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([LIAR, HONEST], { verify: { rate: 0.3, canaries: 4 } })
  try {
    const result = await mesh.generate(request)
    assert.equal(result.faults?.length, 1)
    assert.equal(result.faults[0].peer, world.peer(LIAR).toString())
    assert.deepEqual(result.tokens, expected.tokens)
    const report = result.verification
    assert.ok(report !== undefined)
    // caught by a canary before its first lie reached the chain, or later (then the run was repeated)
    assert.ok(report.regenerated === 0 || report.regenerated === 1)
    t.diagnostic(`caught by ${result.faults[0].kind} at step ${result.faults[0].step}; runs repeated: ${report.regenerated}`)
  } finally {
    await mesh.close()
  }
})

test('with the local referee off, a third server settles the disagreement (majority)', async () => {
  liar.lieWhen = () => true
  const request = { promptIds: promptIds(11, 2), maxTokens: 10, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([LIAR, HONEST, BACKEND], { verify: { rate: 1, localReferee: false } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.equal(result.faults?.length, 1)
    assert.equal(result.faults[0].peer, world.peer(LIAR).toString())
    assert.equal(result.faults[0].referee, world.peer(BACKEND).toString())
  } finally {
    await mesh.close()
  }
})

test('cost: at any rate every row of a hop with a second server is checked once by the end; the rate sets how many check messages', async (t) => {
  const request = { promptIds: promptIds(10, 6), maxTokens: 20, stopTokens: [] }
  const positions = 10 + 19
  for (const rate of [0.1, 0.5, 1]) {
    const mesh = await open([HONEST, BACKEND], { quantization: 'f16', verify: { rate, canaries: 0 } })
    try {
      const result = await mesh.generate(request)
      const report = result.verification
      assert.ok(report !== undefined)
      assert.deepEqual(result.faults, [])
      const middle = report.hops[1]
      assert.equal(middle.rowsChecked, positions)
      assert.equal(report.extraRows, positions, 'each row re-run once, in batches')
      t.diagnostic(`rate ${rate}: ${middle.checks} checks, ${report.extraRows} extra rows, ${report.extraBytes} extra bytes (hidden ${HIDDEN}, f16, ${positions} positions, 20 steps)`)
    } finally {
      await mesh.close()
    }
  }
})

test('a lying verifier is caught as such; the honest primary keeps the span and a new verifier catches up from the start', async () => {
  liar.lieWhen = () => true
  const request = { promptIds: promptIds(7, 40), maxTokens: 10, stopTokens: [] }
  const expected = await local.generate(request)
  const mesh = await open([HONEST, LIAR, BACKEND], { verify: { rate: 1 } })
  try {
    const result = await mesh.generate(request)
    assert.deepEqual(result.tokens, expected.tokens)
    assert.deepEqual(result.faults?.map((f) => [f.peer, f.kind, f.referee]), [[world.peer(LIAR).toString(), 'verifier', 'local']])
    assert.deepEqual(result.failovers, [], 'the primary was right and stays')
    const middle = result.verification?.hops[1]
    assert.equal(middle?.checks, 10)
    assert.equal(middle?.rowsChecked, 7 + 9)
  } finally {
    await mesh.close()
  }
})

test('two servers that disagree with no referee (no local stage allowed, no third server) fail the generation with ERR_VERIFY_CONFLICT', async () => {
  liar.lieWhen = () => true
  const mesh = await open([LIAR, HONEST], { verify: { rate: 1, localReferee: false } })
  try {
    await assert.rejects(mesh.generate({ promptIds: promptIds(6, 41), maxTokens: 4, stopTokens: [] }), { code: 'ERR_VERIFY_CONFLICT' })
    assert.deepEqual(mesh.faultyPeers, [], 'nobody is excluded on a guess')
  } finally {
    await mesh.close()
  }
})

test('verifier and canary sessions carry only activation frames: no token ids, no text', async () => {
  const streams: Array<{ protocol: string, chunks: Uint8Array[] }> = []
  const libp2p = tappedLibp2p(world.swarm.nodes[0].mesh.libp2p, streams)
  const mesh = await MeshModel.open({ libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: chain([HONEST, BACKEND]), quantization: 'none', threads: 1, verify: { rate: 1, canaries: 3 } })
  const tokenizer = mesh.tokenizer
  assert.ok(tokenizer !== null)
  const text = tokenizer.decode(promptIds(16, 9))
  let result: Awaited<ReturnType<MeshModel['generate']>>
  try {
    result = await mesh.generate({ prompt: text, maxTokens: 10, stopTokens: [] })
  } finally {
    await mesh.close()
  }
  assert.deepEqual(result.faults, [])
  // three hops, one verifier session, and a session per hop per canary probe
  assert.ok(streams.length >= 3 + 1 + 3, `${streams.length} streams`)
  for (const stream of streams) {
    assert.equal(stream.protocol, INFER_PROTOCOL)
    const bytes = Buffer.concat(stream.chunks)
    for (const message of messages(bytes)) {
      const request = InferRequest.decode(message)
      assert.ok(Buffer.from(InferRequest.encode(request)).equals(Buffer.from(message)), 'nothing beyond the schema')
      const kind = requestKind(request)
      if (kind === 'open') {
        assert.deepEqual(Object.keys(request.open ?? {}).sort(), ['configSha256', 'layerEnd', 'layerStart', 'maxLength', 'sessionId', 'weightsSha256'])
        assert.match(request.open?.sessionId ?? '', /^[0-9a-f]{24}$/)
      } else if (kind === 'step') {
        const frame = decodeActivationFrame(new Uint8Array(request.step?.frame ?? []), { width: HIDDEN })
        assert.equal(request.step?.frame.byteLength, 36 + frame.rows * HIDDEN * 4, 'header, f32 payload and CRC: nothing else')
      } else {
        assert.equal(kind, 'close')
      }
    }
    for (const encode of [(ids: number[]) => Uint32Array.from(ids), (ids: number[]) => Uint16Array.from(ids), (ids: number[]) => Uint8Array.from(ids)]) {
      const prefix = encode(result.promptTokens.slice(0, 4))
      assert.equal(Buffer.from(bytes).includes(Buffer.from(prefix.buffer)), false, 'prompt ids on the wire')
    }
    assert.equal(Buffer.from(bytes).includes(Buffer.from(text.slice(0, 12))), false, 'prompt text on the wire')
  }
})

test('POST /api/run/mesh with verify: the JSON reports the verification and any faults; tokens equal local generation', async (t) => {
  liar.lieWhen = () => true
  const client = world.swarm.nodes[0]
  // the daemon route reads the client's own store: the same checkpoint, so the same model identity
  await importModel(client.dataDir, { source: join(world.dir.path, 'ckpt'), name: world.model })
  const api = await startControlApi({ node: client, token: 't0ken', port: 0, routes: meshRunRoutes, logger: silentLogger(), onShutdownRequested: () => {} })
  try {
    const request = { promptIds: promptIds(9, 30), maxTokens: 8, stopTokens: [] }
    const expected = await local.generate(request)
    const response = await fetch(`${api.url}/api/run/mesh`, { method: 'POST', headers: { authorization: 'Bearer t0ken', 'content-type': 'application/json' }, body: JSON.stringify({ model: world.model, ...request, quantization: 'none', verify: 1 }) })
    const json = await response.json() as { tokens: number[], faults: Array<{ peer: string }>, verification: { rate: number, canaries: number, hops: Array<{ checks: number }> } }
    assert.equal(response.status, 200, JSON.stringify(json))
    assert.deepEqual(json.tokens, expected.tokens)
    assert.equal(json.verification.rate, 1)
    assert.equal(json.verification.canaries, 2)
    // layers 2-3 have four servers: checked at every step; a fault can only be the liar (if the route used it)
    assert.equal(json.verification.hops[1].checks, 8)
    assert.ok(json.faults.every((f) => f.peer === world.peer(LIAR).toString()), JSON.stringify(json.faults))
    t.diagnostic(`faults through the route: ${json.faults.length} (the planner picks among four servers for layers 2-3)`)
    const bad = await fetch(`${api.url}/api/run/mesh`, { method: 'POST', headers: { authorization: 'Bearer t0ken', 'content-type': 'application/json' }, body: JSON.stringify({ model: world.model, ...request, verify: 2 }) })
    assert.equal(bad.status, 400)
  } finally {
    await api.stop()
  }
})
