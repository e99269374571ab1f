import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { z } from 'zod'
import type { Permagent } from '../../../src/permagent.ts'
import {
  createCurrentResolver, createNodeProviders, INFERENCE_POLICIES, MAX_CANARIES, parsePolicy, parseTeamId,
  type CurrentResolver, type InferencePolicy, type ProviderResolver, type ProviderResult, type ProviderSettings, type RouteReport, type SplitRequestOptions
} from '../../../src/providers/index.ts'
import type { ChatMessage } from '../../../src/model/index.ts'
import { PermagentError, errorMessage } from '../../../src/util/errors.ts'
import { readConfigFile } from '../../config.ts'
import { dataDirPaths } from '../../paths.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

/**
 * The OpenAI-compatible API (/v1) on the daemon's loopback server, behind the same bearer token:
 * models, chat completions and completions, streamed as server-sent events when asked. Requests
 * go through the provider resolver (src/providers): local models, models whose middle layers peers
 * serve (mesh, team-mesh) and, when allowed, a remote OpenAI-compatible URL. The policy comes from
 * the body (`permagent: { policy, team }`), the `x-permagent-policy` / `x-permagent-team` headers or
 * the config (default local-only); every answer says which provider served it and its privacy class.
 * A mesh answer can be verified (`permagent.verify` or `x-permagent-verify: RATE`); the answer then
 * reports the checks and the servers caught answering wrongly (`x-permagent-faults`).
 */
const permagentOptions = z.object({
  policy: z.enum(INFERENCE_POLICIES as [InferencePolicy, ...InferencePolicy[]]).optional(),
  team: z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 lowercase hex characters').optional(),
  /** A rate (0..1; canaries follow the config, else 2 when above 0), or the rate and canaries per hop. */
  verify: z.union([
    z.number().min(0).max(1),
    z.object({ rate: z.number().min(0).max(1).optional(), canaries: z.number().int().min(0).max(MAX_CANARIES).optional() }).strict()
  ]).optional(),
  /** Activations on the wire of a mesh answer (default: providers.mesh.activations, else f16). */
  activations: z.enum(['none', 'f16', 'int8-block']).optional()
}).strict()

const common = {
  model: z.string().min(1).max(256),
  max_tokens: z.number().int().min(0).max(1 << 20).nullish(),
  max_completion_tokens: z.number().int().min(0).max(1 << 20).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().min(0).max(2 ** 32 - 1).nullish(),
  stream: z.boolean().nullish(),
  n: z.literal(1).nullish(),
  user: z.string().max(256).nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullish(),
  permagent: permagentOptions.nullish()
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

const resolvers = new WeakMap<Permagent, CurrentResolver>()

/**
 * Runs `use` with the node's resolver for config.json's `providers` section as it is now (read on
 * every request: a small file; the daemon validated it at start, an edit applies to the next
 * request, an invalid edit fails the request with ERR_CONFIG naming the field) and
 * PERMAGENT_REMOTE_API_KEY. The OpenAI routes and `POST /api/run/mesh` share it.
 */
export async function withNodeProviders<T> (node: Permagent, use: (resolver: ProviderResolver, settings: ProviderSettings) => Promise<T>): Promise<T> {
  let current = resolvers.get(node)
  if (current === undefined) {
    const file = dataDirPaths(node.dataDir).config
    current = createCurrentResolver({
      load: async () => (await readConfigFile(file)).providers ?? {},
      build: (settings) => createNodeProviders({ node, settings, env: process.env }),
      logger: node.logger.child({ module: 'providers' })
    })
    resolvers.set(node, current)
  }
  return await current.use(use)
}

function header (request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name]
  if (Array.isArray(value)) throw new PermagentError('ERR_INVALID_INPUT', `give the ${name} header once`)
  return value === undefined || value.trim() === '' ? undefined : value.trim()
}

/** The request's policy and team: the body's `permagent` field, else the headers, else the config's defaults. */
function policyOf (request: IncomingMessage, body: { permagent?: { policy?: InferencePolicy, team?: string } | null }): { policy?: InferencePolicy, team?: string } {
  const policyHeader = header(request, 'x-permagent-policy')
  const teamHeader = header(request, 'x-permagent-team')
  return {
    policy: body.permagent?.policy ?? (policyHeader !== undefined ? parsePolicy(policyHeader) : undefined),
    team: body.permagent?.team ?? (teamHeader !== undefined ? parseTeamId(teamHeader) : undefined)
  }
}

const VERIFY_HEADER = 'x-permagent-verify'

/**
 * The request's split options (mesh answers only): verification from the body's
 * `permagent.verify`, else the `x-permagent-verify: RATE` header; activations from the body.
 */
function splitOf (request: IncomingMessage, body: { permagent?: { verify?: number | { rate?: number, canaries?: number }, activations?: 'none' | 'f16' | 'int8-block' } | null }): { split?: SplitRequestOptions } {
  const asked = body.permagent?.verify
  const fromHeader = header(request, VERIFY_HEADER)
  let verify: SplitRequestOptions['verify']
  if (asked !== undefined) verify = typeof asked === 'number' ? { rate: asked } : { rate: asked.rate ?? 0, canaries: asked.canaries }
  else if (fromHeader !== undefined) {
    const rate = fromHeader.length <= 32 && /^[0-9.eE+-]+$/.test(fromHeader) ? Number(fromHeader) : NaN
    if (!(rate >= 0 && rate <= 1)) throw new PermagentError('ERR_INVALID_INPUT', `the ${VERIFY_HEADER} header is a fraction of steps in 0..1; got "${fromHeader.slice(0, 32)}"`)
    verify = { rate }
  }
  const quantization = body.permagent?.activations
  if (verify === undefined && quantization === undefined) return {}
  return { split: { ...(verify !== undefined ? { verify } : {}), ...(quantization !== undefined ? { quantization } : {}) } }
}

function samplingOf (body: { temperature?: number | null, top_p?: number | null, seed?: number | null }): { temperature: number, topP?: number, seed?: number } {
  return {
    temperature: body.temperature ?? 1,
    ...(body.top_p != null ? { topP: body.top_p } : {}),
    ...(body.seed != null ? { seed: body.seed } : {})
  }
}

const finishReason = (reason: ProviderResult['finishReason']): 'stop' | 'length' => reason === 'stop' ? 'stop' : 'length'

function usageOf (result: ProviderResult): { prompt_tokens: number, completion_tokens: number, total_tokens: number } {
  return { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens, total_tokens: result.promptTokens + result.completionTokens }
}

/**
 * The route as response headers: which provider answered and what left the machine; with
 * verification, its rate, the checks made, the checks that found no second server and the servers
 * caught answering wrongly (the body's `permagent.faults` says which and how).
 */
function routeHeaders (route: RouteReport): Record<string, string> {
  const verification = route.verification
  return {
    'x-permagent-provider': route.provider,
    'x-permagent-privacy': route.privacy,
    ...(route.team !== undefined ? { 'x-permagent-team': route.team } : {}),
    ...(verification !== undefined
      ? {
          [VERIFY_HEADER]: String(verification.rate),
          'x-permagent-faults': String((route.faults ?? verification.faults).length),
          'x-permagent-checks': String(verification.hops.reduce((n, hop) => n + hop.checks, 0)),
          'x-permagent-verify-unavailable': String(verification.hops.reduce((n, hop) => n + hop.unavailable, 0))
        }
      : {})
  }
}

/**
 * Server-sent events whose head is written once the provider is known (the resolver may move to
 * another provider before the first token), so the headers can name it.
 */
function eventStream (response: ServerResponse): { start: (route: RouteReport) => void, send: (data: unknown) => void, readonly started: boolean } {
  let started = false
  return {
    get started () { return started },
    start (route) {
      if (started) return
      started = true
      response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...routeHeaders(route) })
    },
    send (data) { response.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`) }
  }
}

/** Runs a streamed answer; an error after the head went out is sent as an error event (the OpenAI clients raise it). */
async function streamAnswer (response: ServerResponse, run: (events: ReturnType<typeof eventStream>) => Promise<void>): Promise<undefined> {
  const events = eventStream(response)
  try {
    await run(events)
  } catch (err) {
    if (!events.started) throw err
    // the client went away: nobody to tell
    if (response.destroyed) return undefined
    events.send({ error: { code: err instanceof PermagentError ? err.code : 'ERR_INTERNAL', message: err instanceof PermagentError ? err.message : `generation failed: ${errorMessage(err)}` } })
  }
  response.end()
  return undefined
}

function chatMessages (messages: z.infer<typeof chatBody>['messages']): ChatMessage[] {
  return messages.map((m) => ({
    role: (m.role === 'developer' ? 'system' : m.role),
    content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join('')
  }))
}

export const openaiRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/models',
    handler: async ({ node, request, signal }) => await withNodeProviders(node, async (resolver) => {
      const models = await resolver.models(policyOf(request, {}), signal)
      return {
        object: 'list',
        data: models.map((m) => ({ id: m.id, object: 'model', created: 0, owned_by: 'permagent', permagent: { provider: m.provider, kind: m.kind, privacy: m.privacy } }))
      }
    })
  },
  {
    method: 'POST',
    path: '/v1/chat/completions',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, request, response, signal }) => {
      const b = parseBody(chatBody, body)
      const messages = chatMessages(b.messages)
      const id = `chatcmpl-${randomBytes(12).toString('hex')}`
      const created = Math.floor(Date.now() / 1000)
      const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? DEFAULT_MAX_TOKENS
      const base = { model: b.model, messages, maxTokens, sampling: samplingOf(b), ...policyOf(request, b), ...splitOf(request, b) }
      return await withNodeProviders(node, async (resolver) => {
        if (b.stream === true) {
          return await streamAnswer(response, async (events) => {
            const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}): unknown => ({ id, object: 'chat.completion.chunk', created, model: b.model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })
            const result = await resolver.generate({
              ...base,
              onRoute: (route) => { events.start(route); events.send(chunk({ role: 'assistant', content: '' }, null, { permagent: route })) },
              onToken: (e) => { if (e.text !== '') events.send(chunk({ content: e.text }, null)) }
            }, signal)
            events.send(chunk({}, finishReason(result.finishReason), { permagent: result.route }))
            if (b.stream_options?.include_usage === true) events.send({ id, object: 'chat.completion.chunk', created, model: b.model, choices: [], usage: usageOf(result) })
            events.send('[DONE]')
          })
        }
        const result = await resolver.generate(base, signal)
        for (const [name, value] of Object.entries(routeHeaders(result.route))) response.setHeader(name, value)
        return {
          id,
          object: 'chat.completion',
          created,
          model: b.model,
          choices: [{ index: 0, message: { role: 'assistant', content: result.text }, finish_reason: finishReason(result.finishReason), logprobs: null }],
          usage: usageOf(result),
          permagent: result.route
        }
      })
    }
  },
  {
    method: 'POST',
    path: '/v1/completions',
    maxBodyBytes: 8 * 1024 * 1024,
    handler: async ({ node, body, request, response, signal }) => {
      const b = parseBody(completionBody, body)
      const prompt = typeof b.prompt === 'string' ? b.prompt : b.prompt[0]
      const id = `cmpl-${randomBytes(12).toString('hex')}`
      const created = Math.floor(Date.now() / 1000)
      const base = { model: b.model, prompt, maxTokens: b.max_tokens ?? 16, sampling: samplingOf(b), ...policyOf(request, b), ...splitOf(request, b) }
      return await withNodeProviders(node, async (resolver) => {
        if (b.stream === true) {
          return await streamAnswer(response, async (events) => {
            const chunk = (text: string, finish: string | null, extra: Record<string, unknown> = {}): unknown => ({ id, object: 'text_completion', created, model: b.model, choices: [{ index: 0, text, finish_reason: finish, logprobs: null }], ...extra })
            const result = await resolver.generate({
              ...base,
              onRoute: (route) => { events.start(route) },
              onToken: (e) => { if (e.text !== '') events.send(chunk(e.text, null)) }
            }, signal)
            events.send(chunk('', finishReason(result.finishReason), { permagent: result.route }))
            if (b.stream_options?.include_usage === true) events.send({ id, object: 'text_completion', created, model: b.model, choices: [], usage: usageOf(result) })
            events.send('[DONE]')
          })
        }
        const result = await resolver.generate(base, signal)
        for (const [name, value] of Object.entries(routeHeaders(result.route))) response.setHeader(name, value)
        return {
          id,
          object: 'text_completion',
          created,
          model: b.model,
          choices: [{ index: 0, text: result.text, finish_reason: finishReason(result.finishReason), logprobs: null }],
          usage: usageOf(result),
          permagent: result.route
        }
      })
    }
  }
]
