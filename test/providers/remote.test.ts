import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { LocalModel } from '../../src/inference/index.ts'
import { createRemoteProvider, parseBaseUrl, RemoteProviderError, SseParser } from '../../src/providers/index.ts'
import { tempDir, type TempDir } from '../model/fixtures.ts'
import { startOpenAiNode, tinyModelSource, type OpenAiNode } from './fixtures.ts'

let source: TempDir
let server: OpenAiNode & { dir: TempDir }
let local: LocalModel

before(async () => {
  source = await tempDir('permagent-remote-src-')
  server = await startOpenAiNode(await tinyModelSource(source.path))
  local = await LocalModel.open({ dataDir: server.dataDir, name: 'tiny', threads: 1 })
})

after(async () => {
  await local?.close()
  await server?.close()
  await source?.cleanup()
})

test('a remote completion from another node\'s /v1 API equals a local greedy run, streamed and not; the route says cloud', async () => {
  const remote = createRemoteProvider({ baseUrl: server.baseUrl, apiKey: server.token })
  assert.equal(remote.privacy, 'cloud')
  assert.deepEqual((await remote.models()).map((m) => [m.id, m.privacy]), [['tiny', 'cloud']])
  assert.equal(await remote.check('tiny'), null)
  assert.equal((await remote.check('nope'))?.unknownModel, true)

  const expected = await local.generate({ prompt: 'hello world', maxTokens: 10, sampling: { temperature: 0 } })
  const plain = await remote.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 10 })
  assert.equal(plain.text, expected.text)
  assert.equal(plain.completionTokens, expected.tokens.length)
  assert.equal(plain.promptTokens, expected.promptTokens.length)
  assert.equal(plain.finishReason, expected.finishReason === 'stop' ? 'stop' : 'length')
  assert.deepEqual(plain.route, { provider: 'remote', kind: 'remote', privacy: 'cloud', origin: new URL(server.baseUrl).origin })

  const pieces: string[] = []
  const streamed = await remote.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 10, onToken: (e) => { pieces.push(e.text) } })
  assert.ok(pieces.length > 0)
  assert.equal(pieces.join(''), expected.text)
  assert.equal(streamed.text, expected.text)
  assert.equal(streamed.completionTokens, expected.tokens.length, 'usage from the stream\'s last event')

  const messages = [{ role: 'user' as const, content: 'say something' }]
  const chatLocal = await local.generate({ messages, maxTokens: 6, sampling: { temperature: 0 } })
  const chatPieces: string[] = []
  const chat = await remote.generate({ model: 'tiny', messages, maxTokens: 6, onToken: (e) => { chatPieces.push(e.text) } })
  assert.equal(chat.text, chatLocal.text)
  assert.equal(chatPieces.join(''), chatLocal.text)
  assert.equal((await remote.generate({ model: 'tiny', messages, maxTokens: 6 })).text, chatLocal.text)
})

test('remote failures are typed: wrong key (never echoed), unknown model, oversized replies, timeouts, aborts, unreachable', async () => {
  const wrongKey = 'sk-wrong-key-0123456789'
  const unauthorized = createRemoteProvider({ baseUrl: server.baseUrl, apiKey: wrongKey })
  await assert.rejects(unauthorized.generate({ model: 'tiny', prompt: 'hi', maxTokens: 2 }), (err: unknown) => {
    assert.ok(err instanceof RemoteProviderError)
    assert.equal(err.code, 'ERR_REMOTE_UNAUTHORIZED')
    assert.equal(err.status, 401)
    assert.ok(!err.message.includes(wrongKey))
    return true
  })
  assert.equal((await unauthorized.check('tiny'))?.unknownModel, false, 'a model list it cannot read is not "unknown model"')

  const remote = createRemoteProvider({ baseUrl: server.baseUrl, apiKey: server.token, models: ['tiny', 'nope'] })
  await assert.rejects(remote.generate({ model: 'nope', prompt: 'hi', maxTokens: 2 }), (err: unknown) => err instanceof RemoteProviderError && err.code === 'ERR_REMOTE_STATUS' && err.status === 404 && /no model "nope"/.test(err.message))
  await assert.rejects(remote.generate({ model: 'tiny', promptIds: [1, 2], maxTokens: 2 }), /not token ids/)

  const small = createRemoteProvider({ baseUrl: server.baseUrl, apiKey: server.token, maxResponseBytes: 1024 })
  await assert.rejects(small.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 32, stopTokens: undefined, onToken: () => {} }), (err: unknown) => err instanceof RemoteProviderError && err.code === 'ERR_REMOTE_TOO_LARGE')

  const hasty = createRemoteProvider({ baseUrl: server.baseUrl, apiKey: server.token, timeoutMs: 1 })
  await assert.rejects(hasty.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 64 }), (err: unknown) => err instanceof RemoteProviderError && err.code === 'ERR_REMOTE_TIMEOUT')

  const controller = new AbortController()
  const reason = new Error('the caller gave up')
  const aborted = remote.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 64, onToken: () => { controller.abort(reason) } }, controller.signal)
  await assert.rejects(aborted, (err: unknown) => err === reason)

  // a port nobody listens on
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => { resolve(port) })
    })
  })
  const nowhere = createRemoteProvider({ baseUrl: `http://127.0.0.1:${closedPort}/v1`, apiKey: 'k', models: ['tiny'] })
  await assert.rejects(nowhere.generate({ model: 'tiny', prompt: 'hi', maxTokens: 2 }), (err: unknown) => err instanceof RemoteProviderError && err.code === 'ERR_REMOTE_UNREACHABLE')

  assert.throws(() => parseBaseUrl('https://user:secret@example.com/v1'), /must not carry credentials/)
  assert.throws(() => parseBaseUrl('ftp://example.com/v1'), /must be http/)
  assert.throws(() => parseBaseUrl('not a url'), /not a valid URL/)
})

test('the SSE parser joins data lines, takes LF, CRLF and CR split anywhere, skips comments, refuses oversized events', () => {
  const parser = new SseParser(64)
  const bytes = new TextEncoder().encode(': comment\r\ndata: {"a":1}\r\n\r\ndata: line one\ndata: line two\n\nevent: x\rdata:[DONE]\r\r')
  const events: string[] = []
  for (let i = 0; i < bytes.length; i += 3) events.push(...parser.push(bytes.subarray(i, i + 3)))
  // the last CR may still become CRLF: the event completes when the stream ends
  assert.deepEqual(events, ['{"a":1}', 'line one\nline two'])
  assert.deepEqual(parser.finish(), ['[DONE]'])
  // a multi-byte character split across chunks
  const euro = new TextEncoder().encode('data: €\n\n')
  const split = new SseParser(64)
  assert.deepEqual([...split.push(euro.subarray(0, 7)), ...split.push(euro.subarray(7))], ['€'])
  assert.throws(() => new SseParser(16).push(new TextEncoder().encode(`data: ${'x'.repeat(40)}`)), (err: unknown) => err instanceof RemoteProviderError && err.code === 'ERR_REMOTE_TOO_LARGE')
})
