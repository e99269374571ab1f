import { randomBytes } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import { z } from 'zod'
import { LocalModel, type GenerateRequest, type GenerateResult } from '../../../src/inference/index.ts'
import { listModels } from '../../../src/model/index.ts'
import type { Permagent } from '../../../src/permagent.ts'
import { PermagentError } from '../../../src/util/errors.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

/**
 * The OpenAI-compatible API (/v1) on the daemon's loopback server, behind the same bearer token:
 * models, chat completions and completions, streamed as server-sent events when asked. Models are
 * the node's stored models, run locally; each is opened once and serves one request at a time.
 */
const common = {
  model: z.string().min(1).max(128),
  max_tokens: z.number().int().min(0).max(1 << 20).nullish(),
  max_completion_tokens: z.number().int().min(0).max(1 << 20).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).nullish(),
  stream: z.boolean().nullish(),
  n: z.literal(1).nullish(),
  user: z.string().max(256).nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullish()
}
const chatBody = z.object({
  ...common,
  messages: z.array(z.object({
    role: z.enum(['system', 'user', 'assistant', 'developer']),
    content: z.union([z.string().max(1 << 20), z.array(z.object({ type: z.literal('text'), text: z.string().max(1 << 20) }).passthrough()).max(256)])
  }).passthrough()).min(1).max(1024)
}).passthrough()
const completionBody = z.object({ ...common, prompt: z.union([z.string().max(1 << 20), z.array(z.string().max(1 << 20)).length(1)]) }).passthrough()

const DEFAULT_MAX_TOKENS = 256

interface OpenModel { model: LocalModel, queue: Promise<unknown> }
const opened = new WeakMap<Permagent, Map<string, Promise<OpenModel>>>()

async function modelOf (node: Permagent, name: string): Promise<OpenModel> {
  let byName = opened.get(node)
  if (byName == null) { byName = new Map(); opened.set(node, byName) }
  let entry = byName.get(name)
  if (entry == null) {
    const known = (await listModels(node.dataDir)).some((m) => m.name === name)
    if (!known) throw new PermagentError('ERR_MODEL_NOT_FOUND', `no model "${name}" on this node; see GET /v1/models (import one with permagent model import)`)
    entry = LocalModel.open({ dataDir: node.dataDir, name }).then((model) => ({ model, queue: Promise.resolve() }))
    byName.set(name, entry)
    entry.catch(() => { byName?.delete(name) })
  }
  return await entry
}

/** Runs one generation at a time per model, in arrival order. */
async function generate (node: Permagent, name: string, request: GenerateRequest): Promise<GenerateResult> {
  const entry = await modelOf(node, name)
  const run = entry.queue.then(async () => await entry.model.generate(request))
  entry.queue = run.catch(() => {})
  return await run
}

function samplingOf (body: { temperature?: number | null, top_p?: number | null, seed?: number | null }): GenerateRequest['sampling'] {
  return {
    temperature: body.temperature ?? 1,
    ...(body.top_p != null ? { topP: body.top_p } : {}),
    ...(body.seed != null ? { seed: body.seed } : {})
  }
}

const finishReason = (reason: GenerateResult['finishReason']): 'stop' | 'length' => reason === 'stop' ? 'stop' : 'length'

function usageOf (result: GenerateResult): { prompt_tokens: number, completion_tokens: number, total_tokens: number } {
  return { prompt_tokens: result.promptTokens.length, completion_tokens: result.tokens.length, total_tokens: result.promptTokens.length + result.tokens.length }
}

function startEvents (response: ServerResponse): (data: unknown) => void {
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
  return (data) => { response.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`) }
}

export const openaiRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/models',
    handler: async ({ node }) => ({
      object: 'list',
      data: (await listModels(node.dataDir)).map((m) => ({ id: m.name, object: 'model', created: 0, owned_by: 'permagent' }))
    })
  },
  {
    method: 'POST',
    path: '/v1/chat/completions',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, response, signal }) => {
      const b = parseBody(chatBody, body)
      const messages = b.messages.map((m) => ({
        role: (m.role === 'developer' ? 'system' : m.role),
        content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join('')
      }))
      const id = `chatcmpl-${randomBytes(12).toString('hex')}`
      const created = Math.floor(Date.now() / 1000)
      const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? DEFAULT_MAX_TOKENS
      if (b.stream === true) {
        await modelOf(node, b.model)
        const send = startEvents(response)
        const chunk = (delta: Record<string, unknown>, finish: string | null): unknown => ({ id, object: 'chat.completion.chunk', created, model: b.model, choices: [{ index: 0, delta, finish_reason: finish }] })
        send(chunk({ role: 'assistant', content: '' }, null))
        const result = await generate(node, b.model, { messages, maxTokens, sampling: samplingOf(b), signal, onToken: (e) => { if (e.text !== '') send(chunk({ content: e.text }, null)) } })
        send(chunk({}, finishReason(result.finishReason)))
        if (b.stream_options?.include_usage === true) send({ id, object: 'chat.completion.chunk', created, model: b.model, choices: [], usage: usageOf(result) })
        send('[DONE]')
        response.end()
        return undefined
      }
      const result = await generate(node, b.model, { messages, maxTokens, sampling: samplingOf(b), signal })
      return {
        id,
        object: 'chat.completion',
        created,
        model: b.model,
        choices: [{ index: 0, message: { role: 'assistant', content: result.text }, finish_reason: finishReason(result.finishReason), logprobs: null }],
        usage: usageOf(result)
      }
    }
  },
  {
    method: 'POST',
    path: '/v1/completions',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, response, signal }) => {
      const b = parseBody(completionBody, body)
      const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt[0]
      const id = `cmpl-${randomBytes(12).toString('hex')}`
      const created = Math.floor(Date.now() / 1000)
      const maxTokens = b.max_tokens ?? 16
      if (b.stream === true) {
        await modelOf(node, b.model)
        const send = startEvents(response)
        const chunk = (text: string, finish: string | null): unknown => ({ id, object: 'text_completion', created, model: b.model, choices: [{ index: 0, text, finish_reason: finish, logprobs: null }] })
        const result = await generate(node, b.model, { prompt, maxTokens, sampling: samplingOf(b), signal, onToken: (e) => { if (e.text !== '') send(chunk(e.text, null)) } })
        send(chunk('', finishReason(result.finishReason)))
        send('[DONE]')
        response.end()
        return undefined
      }
      const result = await generate(node, b.model, { prompt, maxTokens, sampling: samplingOf(b), signal })
      return {
        id,
        object: 'text_completion',
        created,
        model: b.model,
        choices: [{ index: 0, text: result.text, finish_reason: finishReason(result.finishReason), logprobs: null }],
        usage: usageOf(result)
      }
    }
  }
]
