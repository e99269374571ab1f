import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { decodeActivationFrame } from '../../src/usxf/index.ts'
import { InferRequest } from '../../src/pb/infer.ts'
import { MeshModel, requestKind } from '../../src/split/index.ts'
import { promptIds, SPANS, splitWorld, type SplitWorld } from './fixtures.ts'
import { messages, tappedLibp2p } from './wire-tap.ts'

let world: SplitWorld

before(async () => {
  world = await splitWorld(SPANS)
})

after(async () => {
  await world?.close()
})

function contains (haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).includes(Buffer.from(needle))
}

test('only activation frames, the model identity and the span reach a layer server: no token ids, no text', async () => {
  const streams: Array<{ protocol: string, chunks: Uint8Array[] }> = []
  const libp2p = tappedLibp2p(world.swarm.nodes[0].mesh.libp2p, streams)
  const mesh = await MeshModel.open({ libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: SPANS.map((s, i) => ({ ...s, peers: [world.peer(i + 1)] })), quantization: 'none', threads: 1 })
  const tokenizer = mesh.tokenizer
  assert.ok(tokenizer !== null, 'the synthetic model has a tokenizer')
  const prompt = promptIds(20, 5)
  const text = tokenizer.decode(prompt)
  const result = await mesh.generate({ prompt: text, maxTokens: 12, stopTokens: [] })
  await mesh.close()
  assert.equal(result.tokens.length, 12)
  const hidden = mesh.manifest.spec.hiddenSize
  const allIds = [...result.promptTokens, ...result.tokens]

  assert.equal(streams.length, 3, 'one stream per server')
  let frames = 0
  for (const stream of streams) {
    assert.equal(stream.protocol, '/permagent/infer/1.0.0')
    const bytes = Buffer.concat(stream.chunks)
    const kinds: string[] = []
    for (const message of messages(bytes)) {
      const request = InferRequest.decode(message)
      // nothing beyond the schema's fields: re-encoding gives the same bytes
      assert.ok(Buffer.from(InferRequest.encode(request)).equals(Buffer.from(message)), "re-encoding gives the same bytes")
      const kind = requestKind(request)
      kinds.push(kind)
      if (kind === 'open') {
        const open = request.open!
        assert.deepEqual(Object.keys(open).sort(), ['configSha256', 'layerEnd', 'layerStart', 'maxLength', 'sessionId', 'weightsSha256'])
        assert.match(open.sessionId, /^[0-9a-f]{24}$/, 'a random session id')
      } else if (kind === 'step') {
        const frame = decodeActivationFrame(new Uint8Array(request.step!.frame), { width: hidden })
        assert.equal(frame.width, hidden)
        assert.equal(request.step!.frame.byteLength, 36 + frame.rows * hidden * 4, 'header, f32 payload and CRC: nothing else')
        frames++
      }
    }
    assert.deepEqual(kinds, ['open', 'step', ...Array(11).fill('step'), 'close'])
    // the token ids appear in no encoding, and the text not at all
    for (const encode of [(ids: number[]) => Uint32Array.from(ids), (ids: number[]) => Uint16Array.from(ids), (ids: number[]) => BigInt64Array.from(ids, BigInt), (ids: number[]) => Uint8Array.from(ids)]) {
      const prefix = encode(result.promptTokens.slice(0, 4))
      assert.equal(contains(bytes, new Uint8Array(prefix.buffer)), false, 'prompt ids on the wire')
    }
    assert.equal(contains(bytes, new TextEncoder().encode(text.slice(0, 12))), false, 'prompt text on the wire')
    assert.equal(contains(bytes, new TextEncoder().encode(JSON.stringify(allIds.slice(0, 3)).slice(1, -1))), false)
  }
  assert.equal(frames, 36)
})

test('an f16 decode step costs hidden x 2 bytes plus at most 128 bytes of framing per hop', async (t) => {
  const streams: Array<{ protocol: string, chunks: Uint8Array[] }> = []
  const libp2p = tappedLibp2p(world.swarm.nodes[0].mesh.libp2p, streams)
  const mesh = await MeshModel.open({ libp2p, dataDir: world.dataDir, name: world.model, headLayers: 1, tailLayers: 1, chain: SPANS.map((s, i) => ({ ...s, peers: [world.peer(i + 1)] })), threads: 1 })
  await mesh.generate({ promptIds: promptIds(8, 2), maxTokens: 6, stopTokens: [] })
  await mesh.close()
  const hidden = mesh.manifest.spec.hiddenSize
  const sizes = new Set<number>()
  for (const stream of streams) {
    const bytes = Buffer.concat(stream.chunks)
    let at = 0
    for (const message of messages(bytes)) {
      const prefixed = message.byteOffset - bytes.byteOffset - at + message.byteLength
      at += prefixed
      const request = InferRequest.decode(message)
      if (request.step == null) continue
      const frame = decodeActivationFrame(new Uint8Array(request.step.frame))
      if (frame.rows === 1) sizes.add(prefixed)
    }
  }
  t.diagnostic(`decode step on the wire (length prefix included): ${[...sizes].join(', ')} bytes for hidden ${hidden} (payload ${hidden * 2})`)
  assert.equal(sizes.size, 1, 'every decode step has the same size')
  const [size] = sizes
  assert.ok(size <= hidden * 2 + 128, `${size} bytes`)
})
