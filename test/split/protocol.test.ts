import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { loadManifest, type ModelManifest } from '../../src/model/index.ts'
import { Stage } from '../../src/inference/index.ts'
import { openChannel, type MessageChannel } from '../../src/mesh/index.ts'
import { decodeActivationFrame, encodeActivationFrame, frameBytes, type UsxfQuantization } from '../../src/usxf/index.ts'
import { InferRequest, InferResponse } from '../../src/pb/infer.ts'
import { INFER_PROTOCOL, responseKind } from '../../src/split/index.ts'
import { seededValues } from '../usxf/helpers.ts'
import { waitFor } from '../../src/util/index.ts'
import { splitWorld, type SplitWorld } from './fixtures.ts'

// One server for layers 1-3, at most 3 sessions of 64 positions, steps of at most 32 rows.
let world: SplitWorld
let manifest: ModelManifest
let reference: Stage
const SPAN = { start: 1, end: 3 }

before(async () => {
  world = await splitWorld([SPAN], { limits: { maxSessions: 3, maxLength: 64, maxStepRows: 32 } })
  manifest = await loadManifest(world.dataDir, world.model)
  reference = await Stage.open(world.dataDir, manifest, { ...SPAN, embed: false, lmHead: false }, { threads: 1 })
})

after(async () => {
  await reference?.close()
  await world?.close()
})

const hex = (s: string): Uint8Array<ArrayBuffer> => new Uint8Array(Buffer.from(s, 'hex'))

/** A raw client stream to the server, whose messages may be as large as we like. */
async function connect (): Promise<MessageChannel> {
  return await openChannel(world.swarm.nodes[0].mesh.libp2p, world.peer(1), INFER_PROTOCOL, { maxMessageBytes: 4 << 20, signal: AbortSignal.timeout(10_000) })
}

async function exchange (channel: MessageChannel, request: InferRequest | Uint8Array): Promise<InferResponse> {
  await channel.send(request instanceof Uint8Array ? request : InferRequest.encode(request), AbortSignal.timeout(10_000))
  const response = InferResponse.decode(await channel.receive({ timeoutMs: 10_000 }))
  responseKind(response)
  return response
}

function open (sessionId: string, overrides: Partial<NonNullable<InferRequest['open']>> = {}): InferRequest {
  return { open: { sessionId, configSha256: hex(manifest.configSha256), weightsSha256: hex(manifest.weightsSha256), layerStart: SPAN.start, layerEnd: SPAN.end, maxLength: 64, ...overrides } }
}

function frame (step: number, positionStart: number, rows: number, quantization: UsxfQuantization = 'none', seed = 1): { bytes: Uint8Array<ArrayBuffer>, values: Float32Array } {
  const values = seededValues(rows * manifest.spec.hiddenSize, seed + positionStart).map((v) => v / 4)
  return { bytes: encodeActivationFrame({ step, positionStart, rows, width: manifest.spec.hiddenSize, values }, { quantization }) as Uint8Array<ArrayBuffer>, values }
}

function stepRequest (sessionId: string, bytes: Uint8Array<ArrayBuffer>): InferRequest {
  return { step: { sessionId, frame: bytes } }
}

function assertError (response: InferResponse, code: string): void {
  assert.equal(response.error?.code, code, `expected ${code}, got ${JSON.stringify(response.error ?? Object.keys(response))}`)
}

/**
 * A healthy session beside the faulty ones: after every error, its next step must still give
 * exactly what the same span computes locally.
 */
class Witness {
  readonly id: string
  channel!: MessageChannel
  cache = reference.newCache()
  step = 0

  constructor (id: string) {
    this.id = id
  }

  async start (): Promise<void> {
    this.channel = await connect()
    assert.ok((await exchange(this.channel, open(this.id))).opened != null)
  }

  async advance (): Promise<void> {
    const { bytes, values } = frame(this.step, this.cache.length, 2, 'none', 99)
    const response = await exchange(this.channel, stepRequest(this.id, bytes))
    const got = decodeActivationFrame(response.result!.frame)
    const expected = (await reference.run({ hidden: values }, this.cache)).hidden!
    assert.deepEqual(got.values, expected, 'the witness session computes exactly the local result')
    this.step++
  }
}

test('every protocol error gets its typed reply, and the server keeps serving this stream and others', async () => {
  const witness = new Witness('witness-1')
  await witness.start()
  await witness.advance()

  const channel = await connect()
  // wrong model, wrong span
  assertError(await exchange(channel, open('s1', { weightsSha256: hex('00'.repeat(32)) })), 'ERR_WRONG_MODEL')
  assertError(await exchange(channel, open('s1', { configSha256: hex('11'.repeat(32)) })), 'ERR_WRONG_MODEL')
  assertError(await exchange(channel, open('s1', { layerStart: 1, layerEnd: 2 })), 'ERR_WRONG_SPAN')
  assertError(await exchange(channel, open('s1', { maxLength: 65 })), 'ERR_MAX_LENGTH')
  assertError(await exchange(channel, open('bad id!')), 'ERR_INVALID_MESSAGE')
  await witness.advance()
  // unknown session: a step or close before open, or naming another session
  assertError(await exchange(channel, stepRequest('s1', frame(0, 0, 1).bytes)), 'ERR_UNKNOWN_SESSION')
  assertError(await exchange(channel, { close: { sessionId: 's1' } }), 'ERR_UNKNOWN_SESSION')
  assert.ok((await exchange(channel, open('s1'))).opened != null, 'the same stream opens a session after the errors')
  assertError(await exchange(channel, stepRequest('witness-1', frame(0, 0, 1).bytes)), 'ERR_UNKNOWN_SESSION')
  assertError(await exchange(channel, open('s2')), 'ERR_INFER_PROTOCOL')
  await witness.advance()
  // out of order: a skipped step number, a position that does not continue the cache
  assertError(await exchange(channel, stepRequest('s1', frame(1, 0, 3).bytes)), 'ERR_OUT_OF_ORDER')
  assertError(await exchange(channel, stepRequest('s1', frame(0, 5, 3).bytes)), 'ERR_OUT_OF_ORDER')
  const first = await exchange(channel, stepRequest('s1', frame(0, 0, 3).bytes))
  assert.equal(decodeActivationFrame(first.result!.frame).rows, 3)
  assertError(await exchange(channel, stepRequest('s1', frame(1, 0, 1).bytes)), 'ERR_OUT_OF_ORDER')
  assertError(await exchange(channel, stepRequest('s1', frame(0, 3, 1).bytes)), 'ERR_OUT_OF_ORDER')
  await witness.advance()
  // oversize tensors: more rows than a step may carry, a wider row, more positions than the session holds
  assertError(await exchange(channel, stepRequest('s1', frame(1, 3, 33).bytes)), 'ERR_TENSOR_TOO_LARGE')
  const wide = encodeActivationFrame({ step: 1, positionStart: 3, rows: 1, width: manifest.spec.hiddenSize * 40, values: new Float32Array(manifest.spec.hiddenSize * 40) }, { quantization: 'f16' }) as Uint8Array<ArrayBuffer>
  assertError(await exchange(channel, stepRequest('s1', wide)), 'ERR_TENSOR_TOO_LARGE')
  const narrow = encodeActivationFrame({ step: 1, positionStart: 3, rows: 2, width: manifest.spec.hiddenSize / 2, values: new Float32Array(manifest.spec.hiddenSize) }, { quantization: 'none' }) as Uint8Array<ArrayBuffer>
  assertError(await exchange(channel, stepRequest('s1', narrow)), 'ERR_USXF_MALFORMED')
  await witness.advance()
  // malformed USXF: a flipped bit, a truncated frame, bad magic, a payload size that lies, not a frame at all
  const good = frame(1, 3, 2, 'f16').bytes
  const flipped = good.slice(); flipped[40] ^= 0x10
  assertError(await exchange(channel, stepRequest('s1', flipped)), 'ERR_USXF_CHECKSUM')
  assertError(await exchange(channel, stepRequest('s1', good.slice(0, good.length - 7))), 'ERR_USXF_TRUNCATED')
  const magic = good.slice(); magic[0] = 0x41
  assertError(await exchange(channel, stepRequest('s1', magic)), 'ERR_USXF_MALFORMED')
  assertError(await exchange(channel, stepRequest('s1', new Uint8Array(10))), 'ERR_USXF_TRUNCATED')
  assertError(await exchange(channel, new Uint8Array([0xff, 0xff, 0xff])), 'ERR_INVALID_MESSAGE')
  assertError(await exchange(channel, {}), 'ERR_INVALID_MESSAGE')
  await witness.advance()
  // the session itself is intact: the well-formed step continues it
  const next = await exchange(channel, stepRequest('s1', good))
  assert.equal(decodeActivationFrame(next.result!.frame).positionStart, 3)
  assert.equal(decodeActivationFrame(next.result!.frame).quantization, 'f16', 'the reply uses the step\'s quantization')
  // a session that would run past its length
  const long = await connect()
  assert.ok((await exchange(long, open('short', { maxLength: 4 }))).opened != null)
  assertError(await exchange(long, stepRequest('short', frame(0, 0, 5).bytes)), 'ERR_MAX_LENGTH')
  // the server is full (witness, s1, short): a fourth session is refused, then fits once one closes
  const extra = await connect()
  assertError(await exchange(extra, open('s3')), 'ERR_SERVER_FULL')
  assert.ok((await exchange(long, { close: { sessionId: 'short' } })).closed != null)
  assert.ok((await exchange(extra, open('s3'))).opened != null)
  await witness.advance()
  for (const c of [channel, long, extra]) await c.close()
  await witness.advance()
  await witness.channel.close()
  // closed streams release their sessions
  await waitFor(() => world.servers[0].stats().sessions === 0, { what: 'every session released' })
  const stats = world.servers[0].stats()
  assert.ok(stats.errors.ERR_WRONG_MODEL === 2 && stats.errors.ERR_OUT_OF_ORDER === 4, JSON.stringify(stats.errors))
})

test('a message over the size limit is refused and ends only its own stream', async () => {
  const witness = new Witness('witness-2')
  await witness.start()
  const channel = await connect()
  assert.ok((await exchange(channel, open('big'))).opened != null)
  const huge = new Uint8Array(frameBytes(200, manifest.spec.hiddenSize, { quantization: 'none' }))
  assertError(await exchange(channel, stepRequest('big', huge)), 'ERR_TENSOR_TOO_LARGE')
  await assert.rejects(channel.receive({ timeoutMs: 10_000 }), (err: { code?: string }) => err.code === 'ERR_STREAM_CLOSED')
  await witness.advance()
  // the dropped stream's session is gone; a new stream may reuse its id
  const again = await connect()
  assert.ok((await exchange(again, open('big'))).opened != null)
  await again.close()
  await witness.advance()
  await witness.channel.close()
})

test('an idle session is dropped with its cache after the idle timeout; new sessions are still served', async () => {
  const idle = await splitWorld([SPAN], { limits: { idleTimeoutMs: 300, maxSessions: 1 } })
  try {
    const m = await loadManifest(idle.dataDir, idle.model)
    const dial = async (): Promise<MessageChannel> => await openChannel(idle.swarm.nodes[0].mesh.libp2p, idle.peer(1), INFER_PROTOCOL, { maxMessageBytes: 1 << 20, signal: AbortSignal.timeout(10_000) })
    const request = { open: { sessionId: 'sleepy', configSha256: hex(m.configSha256), weightsSha256: hex(m.weightsSha256), layerStart: SPAN.start, layerEnd: SPAN.end, maxLength: 16 } }
    const channel = await dial()
    assert.ok((await exchange(channel, request)).opened != null)
    assert.equal(idle.servers[0].stats().sessions, 1)
    await waitFor(() => idle.servers[0].stats().sessions === 0, { what: 'the idle session dropped' })
    await assert.rejects(channel.receive({ timeoutMs: 10_000 }), (err: { code?: string }) => err.code === 'ERR_STREAM_CLOSED')
    // its slot is free again (the server holds one session at most)
    const again = await dial()
    assert.ok((await exchange(again, { ...request, open: { ...request.open, sessionId: 'awake' } })).opened != null)
    await again.close()
  } finally {
    await idle.close()
  }
})
