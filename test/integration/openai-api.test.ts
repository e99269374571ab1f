import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI from 'openai'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

test('the OpenAI-compatible API answers the official client: models, chat and completions, streamed and not', async (t) => {
  const checkpoint = await tempDataDir('permagent-openai-model-')
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(checkpoint); await removeDir(dir) })
  assert.equal((await runCli(['model', 'synth', '--shape', 'tiny', '--seed', '3', '--out', join(checkpoint, 'tiny')])).code, 0)
  assert.equal((await runCli(['model', 'import', join(checkpoint, 'tiny'), '--name', 'tiny', '--data-dir', dir])).code, 0)
  const daemon = await startDaemon(dir)
  t.after(async () => { await daemon.kill() })
  const token = (await readFile(join(dir, 'api-token'), 'utf8')).trim()
  const client = new OpenAI({ apiKey: token, baseURL: `${daemon.info.apiUrl}/v1`, maxRetries: 0 })

  const models = await client.models.list()
  assert.deepEqual(models.data.map((m) => m.id), ['tiny'])

  // greedy completions equal the local CLI run of the same prompt
  const local = await runCliJson(['run', 'tiny', 'hello world', '--max-tokens', '8', '--temperature', '0', '--data-dir', dir])
  const completion = await client.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 8, temperature: 0 })
  assert.equal(completion.choices[0].text, local.text)
  assert.equal(completion.usage?.completion_tokens, local.tokens.length)

  const chat = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'say something' }], max_tokens: 6, temperature: 0 })
  assert.equal(chat.choices[0].message.role, 'assistant')
  assert.equal(typeof chat.choices[0].message.content, 'string')
  assert.ok(['stop', 'length'].includes(chat.choices[0].finish_reason))

  // the stream carries the same text as the non-streamed answer
  const stream = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'say something' }], max_tokens: 6, temperature: 0, stream: true })
  let streamed = ''
  let finish: string | null = null
  for await (const part of stream) {
    streamed += part.choices[0]?.delta?.content ?? ''
    finish = part.choices[0]?.finish_reason ?? finish
  }
  assert.equal(streamed, chat.choices[0].message.content)
  assert.equal(finish, chat.choices[0].finish_reason)

  // clear errors: unknown model, bad body, no token
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => err instanceof OpenAI.NotFoundError && /no model "nope"/.test(err.message))
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [] }), (err: unknown) => err instanceof OpenAI.BadRequestError)
  const anonymous = new OpenAI({ apiKey: 'wrong-token', baseURL: `${daemon.info.apiUrl}/v1`, maxRetries: 0 })
  await assert.rejects(anonymous.models.list(), (err: unknown) => err instanceof OpenAI.AuthenticationError)
})
