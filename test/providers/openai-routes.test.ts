import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI from 'openai'
import { LocalModel } from '../../src/inference/index.ts'
import { tempDir, type TempDir } from '../model/fixtures.ts'
import { startOpenAiNode, tinyModelSource, type OpenAiNode } from './fixtures.ts'

interface RouteField { provider: string, privacy: string, origin?: string }

let dir: TempDir
let cloud: OpenAiNode & { dir: TempDir }
let node: OpenAiNode & { dir: TempDir }
let cloudModel: LocalModel
let openai: OpenAI

before(async () => {
  dir = await tempDir('permagent-openai-routes-')
  const source = await tinyModelSource(dir.path)
  cloud = await startOpenAiNode(source, { model: 'cloudy' })
  node = await startOpenAiNode(source)
  // the node's config names the other node's API as its remote (key in config here; env wins when set)
  await writeFile(join(node.dataDir, 'config.json'), JSON.stringify({ providers: { remote: { baseUrl: cloud.baseUrl, apiKey: cloud.token } } }))
  cloudModel = await LocalModel.open({ dataDir: cloud.dataDir, name: 'cloudy', threads: 1 })
  openai = new OpenAI({ apiKey: node.token, baseURL: node.baseUrl, maxRetries: 0 })
})

after(async () => {
  await cloudModel?.close()
  await node?.close()
  await cloud?.close()
  await dir?.cleanup()
})

test('the /v1 API through the resolver: remote models only under cloud-allowed, streamed and not, the route in headers and body', async () => {
  const cloudAllowed = { headers: { 'x-permagent-policy': 'cloud-allowed' } }
  assert.deepEqual((await openai.models.list()).data.map((m) => m.id), ['tiny'])
  assert.deepEqual((await openai.models.list(cloudAllowed)).data.map((m) => [m.id, (m as unknown as { permagent: RouteField }).permagent.privacy]), [['tiny', 'local'], ['remote/cloudy', 'cloud']])

  // under the default policy the cloud model is unknown, and the error says why
  await assert.rejects(openai.completions.create({ model: 'cloudy', prompt: 'hello world', max_tokens: 4 }), (err: unknown) => err instanceof OpenAI.NotFoundError && /policy local-only does not allow privacy class cloud/.test(err.message))

  const expected = await cloudModel.generate({ prompt: 'hello world', maxTokens: 8, sampling: { temperature: 0 } })
  const plain = await openai.completions.create({ model: 'cloudy', prompt: 'hello world', max_tokens: 8, temperature: 0 }, cloudAllowed).withResponse()
  assert.equal(plain.data.choices[0].text, expected.text)
  assert.equal(plain.response.headers.get('x-permagent-privacy'), 'cloud')
  assert.equal(plain.response.headers.get('x-permagent-provider'), 'remote')
  assert.equal((plain.data as unknown as { permagent: RouteField }).permagent.origin, new URL(cloud.baseUrl).origin)

  const streamBody = { model: 'cloudy', prompt: 'hello world', max_tokens: 8, temperature: 0, stream: true as const, permagent: { policy: 'cloud-allowed' } }
  const { data: stream, response } = await openai.completions.create(streamBody).withResponse()
  assert.equal(response.headers.get('x-permagent-privacy'), 'cloud')
  let text = ''
  for await (const part of stream) text += part.choices[0]?.text ?? ''
  assert.equal(text, expected.text)

  const messages = [{ role: 'user' as const, content: 'say something' }]
  const chatExpected = await cloudModel.generate({ messages, maxTokens: 6, sampling: { temperature: 0 } })
  const chat = await openai.chat.completions.create({ model: 'remote/cloudy', messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } }, cloudAllowed)
  let chatText = ''
  let usage: number | undefined
  for await (const part of chat) {
    chatText += part.choices[0]?.delta?.content ?? ''
    usage = part.usage?.completion_tokens ?? usage
  }
  assert.equal(chatText, chatExpected.text)
  assert.equal(usage, chatExpected.tokens.length)

  // the local model stays local even when the cloud is allowed
  const here = await openai.chat.completions.create({ model: 'tiny', messages, max_tokens: 4, temperature: 0 }, cloudAllowed).withResponse()
  assert.equal(here.response.headers.get('x-permagent-privacy'), 'local')

  // bad policy input is refused at the boundary
  await assert.rejects(openai.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 1 }, { headers: { 'x-permagent-policy': 'anywhere' } }), (err: unknown) => err instanceof OpenAI.BadRequestError && /policy must be one of/.test(err.message))
  await assert.rejects(openai.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 1, permagent: { policy: 'team-mesh', team: 'nope' } } as any), (err: unknown) => err instanceof OpenAI.BadRequestError && /team id is 64/.test(err.message))
  await assert.rejects(openai.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 1, stream: true }, { headers: { 'x-permagent-policy': 'team-mesh' } }), (err: unknown) => err instanceof OpenAI.BadRequestError && /needs a team/.test(err.message))
})
