import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI from 'openai'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

interface RouteField {
  provider: string
  privacy: string
  hops?: Array<{ start: number, end: number, peer: string }>
  faults?: Array<{ peer: string }>
  verification?: { rate: number, hops: Array<{ checks: number, unavailable: number, canaries: number }> }
}

test('the official OpenAI client over the mesh: three daemons, greedy completions equal the local ones, streamed and not, privacy reported', async (t) => {
  const checkpoint = await tempDataDir('permagent-openai-mesh-model-')
  const dirs = [await tempDataDir(), await tempDataDir(), await tempDataDir()]
  t.after(async () => { for (const dir of [checkpoint, ...dirs]) await removeDir(dir) })
  assert.equal((await runCli(['model', 'synth', '--shape', 'tiny', '--seed', '11', '--out', join(checkpoint, 'tiny')])).code, 0)
  for (const dir of dirs) {
    const imported = await runCli(['model', 'import', join(checkpoint, 'tiny'), '--name', 'tiny', '--data-dir', dir])
    assert.equal(imported.code, 0, imported.stderr)
  }
  // exact f32 activations, so the mesh answer equals the local one token for token
  await writeFile(join(dirs[0], 'config.json'), JSON.stringify({ providers: { mesh: { activations: 'none' } } }))
  const client = await startDaemon(dirs[0])
  const serverB = await startDaemon(dirs[1], ['--bootstrap', client.info.addresses[0]])
  const serverC = await startDaemon(dirs[2], ['--bootstrap', client.info.addresses[0]])
  t.after(async () => { await client.kill(); await serverB.kill(); await serverC.kill() })
  await runCliJson(['serve', 'tiny', '--layers', '1-2', '--data-dir', dirs[1]])
  await runCliJson(['serve', 'tiny', '--layers', '2-3', '--data-dir', dirs[2]])

  const token = (await readFile(join(dirs[0], 'api-token'), 'utf8')).trim()
  const openai = new OpenAI({ apiKey: token, baseURL: `${client.info.apiUrl}/v1`, maxRetries: 0 })

  // identify tells the client which peers serve the protocol; the mesh model appears once both spans answer
  const models = await waitFor(async () => {
    const list = await openai.models.list()
    return list.data.some((m) => m.id === 'mesh/tiny') ? list.data : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, what: 'mesh/tiny in /v1/models' })
  assert.deepEqual(models.map((m) => [m.id, (m as unknown as { permagent: RouteField }).permagent.privacy]), [['tiny', 'local'], ['mesh/tiny', 'mesh']])

  // the reference: the same request on the local model (the default policy is local-only)
  const local = await openai.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 10, temperature: 0 }).withResponse()
  assert.equal(local.response.headers.get('x-permagent-privacy'), 'local')
  assert.ok(local.data.choices[0].text.length > 0)

  // mesh is refused under the default policy, with the reason
  await assert.rejects(openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 4, temperature: 0 }), (err: unknown) => err instanceof OpenAI.BadRequestError && /pinned to the mesh provider; policy local-only does not allow privacy class mesh/.test(err.message))

  // policy by header: not streamed
  const meshHeaders = { headers: { 'x-permagent-policy': 'mesh' } }
  const mesh = await openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 10, temperature: 0 }, meshHeaders).withResponse()
  assert.equal(mesh.data.choices[0].text, local.data.choices[0].text)
  assert.equal(mesh.data.usage?.completion_tokens, local.data.usage?.completion_tokens)
  assert.equal(mesh.response.headers.get('x-permagent-privacy'), 'mesh')
  assert.equal(mesh.response.headers.get('x-permagent-provider'), 'mesh')
  const route = (mesh.data as unknown as { permagent: RouteField }).permagent
  assert.equal(route.privacy, 'mesh')
  assert.deepEqual(route.hops, [{ start: 1, end: 2, peer: serverB.info.peerId }, { start: 2, end: 3, peer: serverC.info.peerId }])

  // policy in the body: streamed
  const streamBody = { model: 'mesh/tiny', prompt: 'hello world', max_tokens: 10, temperature: 0, stream: true as const, permagent: { policy: 'mesh' } }
  const { data: stream, response } = await openai.completions.create(streamBody).withResponse()
  assert.equal(response.headers.get('x-permagent-privacy'), 'mesh')
  let streamed = ''
  let last: RouteField | undefined
  for await (const part of stream) {
    streamed += part.choices[0]?.text ?? ''
    last = (part as unknown as { permagent?: RouteField }).permagent ?? last
  }
  assert.equal(streamed, local.data.choices[0].text)
  assert.equal(last?.privacy, 'mesh')

  // chat, streamed and not, equal the local chat answer
  const messages = [{ role: 'user' as const, content: 'say something' }]
  const localChat = await openai.chat.completions.create({ model: 'tiny', messages, max_tokens: 8, temperature: 0 })
  const meshChat = await openai.chat.completions.create({ model: 'mesh/tiny', messages, max_tokens: 8, temperature: 0 }, meshHeaders)
  assert.equal(meshChat.choices[0].message.content, localChat.choices[0].message.content)
  assert.equal((meshChat as unknown as { permagent: RouteField }).permagent.privacy, 'mesh')
  const chatStream = await openai.chat.completions.create({ model: 'mesh/tiny', messages, max_tokens: 8, temperature: 0, stream: true }, meshHeaders)
  let chatText = ''
  const privacies = new Set<string>()
  for await (const part of chatStream) {
    chatText += part.choices[0]?.delta?.content ?? ''
    const field = (part as unknown as { permagent?: RouteField }).permagent
    if (field != null) privacies.add(field.privacy)
  }
  assert.equal(chatText, localChat.choices[0].message.content)
  assert.deepEqual([...privacies], ['mesh'])

  // verification asked by header: each span has one server, so every due check is unavailable and
  // the canaries are answered by the client's own stages; no fault, the same text
  const verified = await openai.completions.create({ model: 'mesh/tiny', prompt: 'hello world', max_tokens: 10, temperature: 0 }, { headers: { 'x-permagent-policy': 'mesh', 'x-permagent-verify': '1' } }).withResponse()
  assert.equal(verified.data.choices[0].text, local.data.choices[0].text)
  assert.equal(verified.response.headers.get('x-permagent-verify'), '1')
  assert.equal(verified.response.headers.get('x-permagent-faults'), '0')
  assert.equal(verified.response.headers.get('x-permagent-checks'), '0')
  const report = (verified.data as unknown as { permagent: RouteField }).permagent
  assert.deepEqual(report.faults, [])
  assert.equal(report.verification?.rate, 1)
  assert.ok(report.verification?.hops.every((h) => h.checks === 0 && h.unavailable > 0 && h.canaries === 2), JSON.stringify(report.verification?.hops))
  assert.equal(verified.response.headers.get('x-permagent-verify-unavailable'), String(report.verification?.hops.reduce((n, h) => n + h.unavailable, 0)))

  // asked in the body of a stream: the report comes in the final chunk
  const verifiedStream = await openai.chat.completions.create({ model: 'mesh/tiny', messages, max_tokens: 8, temperature: 0, stream: true, permagent: { policy: 'mesh', verify: 1 } } as any) as unknown as AsyncIterable<{ choices: Array<{ delta?: { content?: string }, finish_reason?: string | null }>, permagent?: RouteField }>
  let verifiedText = ''
  let final: RouteField | undefined
  for await (const part of verifiedStream) {
    verifiedText += part.choices[0]?.delta?.content ?? ''
    if (part.choices[0]?.finish_reason != null) final = part.permagent
  }
  assert.equal(verifiedText, localChat.choices[0].message.content)
  assert.deepEqual(final?.faults, [])
  assert.equal(final?.verification?.rate, 1)
})
