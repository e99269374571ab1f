import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import { createMeshNode, handleRequests, RequestError, sendRequest, type MeshNode, type MessageCodec, type ProtocolSpec } from '../../src/mesh/index.ts'
import { PermagentError } from '../../src/util/errors.ts'
import { silentLogger } from '../../src/util/logger.ts'

const text: MessageCodec<string> = {
  encode: (s) => new TextEncoder().encode(s),
  decode: (b) => new TextDecoder().decode(b.subarray())
}

let counter = 0
async function memoryNode (): Promise<MeshNode> {
  const node = await createMeshNode({
    identity: await identityFromKeyPair(generateEd25519()),
    logger: silentLogger(),
    listen: [`/memory/reqresp-${process.pid}-${counter++}`],
    mdns: false
  })
  await node.start()
  return node
}

const echo: ProtocolSpec<string, string> = {
  protocol: '/permagent/test-echo/1.0.0',
  request: text,
  response: text,
  maxRequestBytes: 64,
  maxResponseBytes: 128,
  timeouts: { dialMs: 2000, firstByteMs: 300, totalMs: 3000 }
}

test('request/response: replies, typed remote errors, size limits and first-byte timeout', async (t) => {
  const server = await memoryNode()
  const client = await memoryNode()
  t.after(async () => { await client.stop(); await server.stop() })

  await handleRequests(server.libp2p, echo, async (request, context) => {
    if (request === 'fail') throw new PermagentError('ERR_TEST_REFUSED', 'refused on purpose')
    if (request === 'crash') throw new Error('secret internal detail')
    if (request === 'big') return 'x'.repeat(200)
    if (request === 'slow') {
      await new Promise((resolve, reject) => {
        context.signal.addEventListener('abort', () => { reject(new Error('aborted')) })
      })
    }
    return `echo:${request}:${context.remotePeer.toString() === client.peerId.toString() ? 'known' : 'unknown'}`
  }, { logger: silentLogger(), timeoutMs: 2000 })

  const address = server.libp2p.getMultiaddrs()[0]
  assert.equal(await sendRequest(client.libp2p, address, echo, 'hi'), 'echo:hi:known')
  assert.equal(await sendRequest(client.libp2p, server.peerId, echo, 'again'), 'echo:again:known')

  await assert.rejects(sendRequest(client.libp2p, server.peerId, echo, 'fail'),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_TEST_REFUSED' && err.remote && /refused on purpose/.test(err.message))
  await assert.rejects(sendRequest(client.libp2p, server.peerId, echo, 'crash'),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_INTERNAL' && !/secret/.test(err.message))
  await assert.rejects(sendRequest(client.libp2p, server.peerId, echo, 'big'),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_MESSAGE_TOO_LARGE')
  await assert.rejects(sendRequest(client.libp2p, server.peerId, echo, 'y'.repeat(100)),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_MESSAGE_TOO_LARGE')
  await assert.rejects(sendRequest(client.libp2p, server.peerId, echo, 'slow'),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_FIRST_BYTE_TIMEOUT')
  // an oversized request sent by a peer that ignores its own limit is refused by the server
  const lax: ProtocolSpec<string, string> = { ...echo, maxRequestBytes: 1000 }
  await assert.rejects(sendRequest(client.libp2p, server.peerId, lax, 'z'.repeat(500)),
    (err: unknown) => err instanceof RequestError && (err.code === 'ERR_MESSAGE_TOO_LARGE' || err.code === 'ERR_STREAM_CLOSED'))
  // the server keeps serving after all of that
  assert.equal(await sendRequest(client.libp2p, server.peerId, echo, 'still'), 'echo:still:known')
})

test('request to a protocol the peer does not speak fails with a dial error', async (t) => {
  const server = await memoryNode()
  const client = await memoryNode()
  t.after(async () => { await client.stop(); await server.stop() })
  await client.connect(server.libp2p.getMultiaddrs()[0])
  await assert.rejects(sendRequest(client.libp2p, server.peerId, { ...echo, protocol: '/permagent/nobody/1.0.0' }, 'hi'),
    (err: unknown) => err instanceof RequestError && err.code === 'ERR_DIAL_FAILED')
})

test('the policy gater refuses peers a rule rejects, both ways', async (t) => {
  const a = await memoryNode()
  const b = await memoryNode()
  t.after(async () => { await a.stop(); await b.stop() })
  a.gater.setRule('deny-b', (peer) => peer.toString() !== b.peerId.toString())
  await assert.rejects(a.connect(b.libp2p.getMultiaddrs()[0]))
  await assert.rejects(b.connect(a.libp2p.getMultiaddrs()[0]))
  a.gater.removeRule('deny-b')
  const peer = await b.connect(a.libp2p.getMultiaddrs()[0])
  assert.equal(peer.toString(), a.peerId.toString())
})
