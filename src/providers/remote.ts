import { z } from 'zod'
import { InvalidInputError, PermagentError, errorMessage, silentLogger, type Logger } from '../util/index.ts'
import { PROVIDER_ERRORS, RemoteProviderError } from './errors.ts'
import { SseParser } from './sse.ts'
import type { InferenceProvider, ProviderModel, ProviderRefusal, ProviderRequest, ProviderResult } from './types.ts'

export interface RemoteProviderOptions {
  /** The API root, e.g. https://api.openai.com/v1 (requests go to <baseUrl>/chat/completions). */
  baseUrl: string
  /** Sent as `Authorization: Bearer <apiKey>`; never logged or put in an error message. */
  apiKey?: string
  /** Model ids offered (default: what GET <baseUrl>/models lists, cached for a minute). */
  models?: string[]
  /** Deadline of one whole request, streamed or not (default 120 s). */
  timeoutMs?: number
  /** Largest response body read, streamed or not (default 8 MiB). */
  maxResponseBytes?: number
  /** Largest single streamed event (default 1 MiB). */
  maxEventBytes?: number
  logger?: Logger
}

const DEFAULT_TIMEOUT_MS = 120_000
const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
const DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
const ERROR_BODY_BYTES = 64 * 1024
const MODEL_LIST_TTL_MS = 60_000

const usageSchema = z.object({ prompt_tokens: z.number().int().min(0), completion_tokens: z.number().int().min(0) }).passthrough().nullish()
const finishSchema = z.string().max(64).nullish()
const chatReply = z.object({ choices: z.array(z.object({ message: z.object({ content: z.string().nullish() }).passthrough(), finish_reason: finishSchema }).passthrough()).min(1), usage: usageSchema }).passthrough()
const completionReply = z.object({ choices: z.array(z.object({ text: z.string(), finish_reason: finishSchema }).passthrough()).min(1), usage: usageSchema }).passthrough()
const chatChunk = z.object({ choices: z.array(z.object({ delta: z.object({ content: z.string().nullish() }).passthrough().nullish(), finish_reason: finishSchema }).passthrough()), usage: usageSchema }).passthrough()
const completionChunk = z.object({ choices: z.array(z.object({ text: z.string().nullish(), finish_reason: finishSchema }).passthrough()), usage: usageSchema }).passthrough()
const modelList = z.object({ data: z.array(z.object({ id: z.string().min(1).max(256) }).passthrough()).max(10_000) }).passthrough()
const errorReply = z.object({ error: z.object({ message: z.string() }).passthrough() }).passthrough()

/** The API root, checked: http(s), no credentials in the URL (the key goes in a header). */
export function parseBaseUrl (value: string): URL {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new InvalidInputError('the remote base URL is not a valid URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new InvalidInputError(`the remote base URL must be http(s), not ${url.protocol}`)
  if (url.username !== '' || url.password !== '') throw new InvalidInputError('the remote base URL must not carry credentials; set the API key instead')
  if (url.search !== '' || url.hash !== '') throw new InvalidInputError('the remote base URL must not have a query or fragment')
  return url
}

const mapFinish = (reason: string | null | undefined): ProviderResult['finishReason'] => reason === 'length' ? 'length' : 'stop'

/**
 * Any OpenAI-compatible API as a provider (a cloud fallback, or another node's /v1): chat or text
 * completions, streamed over server-sent events when the caller wants tokens as they come. The
 * prompt text leaves the machine: privacy class `cloud`.
 */
export function createRemoteProvider (options: RemoteProviderOptions): InferenceProvider {
  const base = parseBaseUrl(options.baseUrl)
  const root = base.href.endsWith('/') ? base.href : `${base.href}/`
  const origin = base.origin
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES
  const maxEventBytes = Math.min(options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES, maxResponseBytes)
  const logger = (options.logger ?? silentLogger()).child({ provider: 'remote', origin })
  const apiKey = options.apiKey
  const report = { provider: 'remote', kind: 'remote', privacy: 'cloud', origin } as const
  let listed: { at: number, ids: string[] } | null = null

  /** Never lets the key through: a remote's error message may quote it. */
  const redact = (text: string): string => (apiKey != null && apiKey !== '' ? text.split(apiKey).join('[redacted]') : text).slice(0, 500)

  const call = async (method: 'GET' | 'POST', path: string, body: unknown, signal: AbortSignal | undefined): Promise<{ response: Response, deadline: AbortSignal }> => {
    const timeout = AbortSignal.timeout(timeoutMs)
    const deadline = signal != null ? AbortSignal.any([signal, timeout]) : timeout
    const headers: Record<string, string> = { accept: body !== undefined && (body as { stream?: boolean }).stream === true ? 'text/event-stream' : 'application/json' }
    if (apiKey != null && apiKey !== '') headers.authorization = `Bearer ${apiKey}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    try {
      response = await fetch(new URL(path, root), { method, headers, body: body !== undefined ? JSON.stringify(body) : undefined, signal: deadline, redirect: 'error' })
    } catch (err) {
      throw failure(err, signal, timeout)
    }
    if (!response.ok) {
      let detail = ''
      try {
        const parsed = errorReply.safeParse(JSON.parse(new TextDecoder().decode(await readLimited(response, ERROR_BODY_BYTES, deadline))))
        if (parsed.success) detail = `: ${redact(parsed.data.error.message)}`
      } catch {}
      const code = response.status === 401 || response.status === 403 ? PROVIDER_ERRORS.remoteUnauthorized : PROVIDER_ERRORS.remoteStatus
      throw new RemoteProviderError(code, `the remote API at ${origin} answered ${method} ${path} with HTTP ${response.status}${detail}`, { status: response.status })
    }
    return { response, deadline }
  }

  /** Maps a fetch or read failure: the caller's abort as is, our deadline as a timeout, else unreachable. */
  const failure = (err: unknown, signal: AbortSignal | undefined, timeout: AbortSignal): unknown => {
    if (err instanceof PermagentError) return err
    if (signal?.aborted === true) return signal.reason
    if (timeout.aborted) return new RemoteProviderError(PROVIDER_ERRORS.remoteTimeout, `the remote API at ${origin} did not answer within ${timeoutMs} ms`)
    const cause = (err as { cause?: { code?: string } }).cause?.code
    return new RemoteProviderError(PROVIDER_ERRORS.remoteUnreachable, `cannot reach the remote API at ${origin}: ${redact(errorMessage(err))}${cause != null ? ` (${cause})` : ''}`, { cause: err })
  }

  const readLimited = async (response: Response, limit: number, deadline: AbortSignal): Promise<Uint8Array> => {
    const declared = Number(response.headers.get('content-length') ?? 0)
    if (declared > limit) {
      await response.body?.cancel().catch(() => {})
      throw new RemoteProviderError(PROVIDER_ERRORS.remoteTooLarge, `the remote API's reply is ${declared} bytes; the limit is ${limit}`)
    }
    const chunks: Uint8Array[] = []
    let size = 0
    if (response.body == null) return new Uint8Array(0)
    for await (const chunk of response.body) {
      deadline.throwIfAborted()
      size += chunk.byteLength
      if (size > limit) {
        await response.body.cancel().catch(() => {})
        throw new RemoteProviderError(PROVIDER_ERRORS.remoteTooLarge, `the remote API's reply exceeds ${limit} bytes`)
      }
      chunks.push(chunk)
    }
    return Buffer.concat(chunks)
  }

  const parseJson = <T>(schema: z.ZodType<T>, bytes: Uint8Array | string, what: string): T => {
    let json: unknown
    try {
      json = JSON.parse(typeof bytes === 'string' ? bytes : new TextDecoder().decode(bytes))
    } catch {
      throw new RemoteProviderError(PROVIDER_ERRORS.remoteInvalid, `the remote API sent ${what} that is not JSON`)
    }
    const parsed = schema.safeParse(json)
    if (!parsed.success) throw new RemoteProviderError(PROVIDER_ERRORS.remoteInvalid, `the remote API sent ${what} of an unexpected shape: ${parsed.error.issues[0]?.path.join('.') ?? ''} ${parsed.error.issues[0]?.message ?? ''}`)
    return parsed.data
  }

  const remoteModels = async (signal?: AbortSignal): Promise<string[]> => {
    if (options.models != null) return options.models
    if (listed !== null && Date.now() - listed.at < MODEL_LIST_TTL_MS) return listed.ids
    const { response, deadline } = await call('GET', 'models', undefined, signal)
    let bytes: Uint8Array
    try {
      bytes = await readLimited(response, maxResponseBytes, deadline)
    } catch (err) {
      throw failure(err, signal, deadline)
    }
    const ids = parseJson(modelList, bytes, 'a model list').data.map((m) => m.id)
    listed = { at: Date.now(), ids }
    return ids
  }

  const bodyOf = (request: ProviderRequest, stream: boolean): { path: string, chat: boolean, body: Record<string, unknown> } => {
    if (request.promptIds !== undefined) throw new InvalidInputError('a remote provider takes text or messages, not token ids (its tokenizer is not ours)')
    if (request.stopTokens !== undefined) throw new InvalidInputError('a remote provider does not take stop token ids')
    const sampling = request.sampling ?? {}
    if ((sampling.topK ?? 0) !== 0) throw new InvalidInputError('a remote OpenAI-compatible API has no top-k sampling')
    if ((sampling.repetitionPenalty ?? 1) !== 1) throw new InvalidInputError('a remote OpenAI-compatible API has no repetition penalty (it has presence/frequency penalties)')
    const common = {
      model: request.model,
      max_tokens: request.maxTokens,
      // the local engine's default is greedy; say so explicitly (the OpenAI default is 1)
      temperature: sampling.temperature ?? 0,
      ...(sampling.topP !== undefined ? { top_p: sampling.topP } : {}),
      ...(sampling.seed !== undefined ? { seed: sampling.seed } : {}),
      ...(stream ? { stream: true, stream_options: { include_usage: true } } : {})
    }
    if (request.messages !== undefined) return { path: 'chat/completions', chat: true, body: { ...common, messages: request.messages } }
    if (request.prompt === undefined) throw new InvalidInputError('give a prompt or messages')
    return { path: 'completions', chat: false, body: { ...common, prompt: request.prompt } }
  }

  const streamed = async (response: Response, chat: boolean, request: ProviderRequest, deadline: AbortSignal): Promise<Omit<ProviderResult, 'route'>> => {
    const type = response.headers.get('content-type') ?? ''
    if (!type.startsWith('text/event-stream')) throw new RemoteProviderError(PROVIDER_ERRORS.remoteInvalid, `the remote API answered a streamed request with ${type.slice(0, 64) || 'no content type'}`)
    if (response.body == null) throw new RemoteProviderError(PROVIDER_ERRORS.remoteInvalid, 'the remote API sent an empty stream')
    const parser = new SseParser(maxEventBytes)
    let text = ''
    let deltas = 0
    let finish: string | null | undefined
    let usage: z.infer<typeof usageSchema>
    let size = 0
    let done = false
    const take = (data: string): void => {
      const event = chat ? parseJson(chatChunk, data, 'a stream event') : parseJson(completionChunk, data, 'a stream event')
      if (event.usage != null) usage = event.usage
      const choice = event.choices[0]
      if (choice == null) return
      const piece = chat ? (choice as z.infer<typeof chatChunk>['choices'][number]).delta?.content : (choice as z.infer<typeof completionChunk>['choices'][number]).text
      if (piece != null && piece !== '') {
        text += piece
        deltas++
        request.onToken?.({ text: piece })
      }
      if (choice.finish_reason != null) finish = choice.finish_reason
    }
    for await (const chunk of response.body) {
      deadline.throwIfAborted()
      size += chunk.byteLength
      if (size > maxResponseBytes) {
        await response.body.cancel().catch(() => {})
        throw new RemoteProviderError(PROVIDER_ERRORS.remoteTooLarge, `the remote API's stream exceeds ${maxResponseBytes} bytes`)
      }
      for (const data of parser.push(chunk)) {
        if (data === '[DONE]') { done = true; break }
        take(data)
      }
      if (done) {
        await response.body.cancel().catch(() => {})
        break
      }
    }
    if (!done) {
      for (const data of parser.finish()) {
        if (data === '[DONE]') { done = true; break }
        take(data)
      }
    }
    if (!done && finish == null) throw new RemoteProviderError(PROVIDER_ERRORS.remoteInvalid, 'the remote API ended the stream before it finished')
    return { text, promptTokens: usage?.prompt_tokens ?? 0, completionTokens: usage?.completion_tokens ?? deltas, finishReason: mapFinish(finish) }
  }

  return {
    id: 'remote',
    kind: 'remote',
    privacy: 'cloud',
    async models (signal?: AbortSignal): Promise<ProviderModel[]> {
      return (await remoteModels(signal)).map((id) => ({ id, ...report }))
    },
    async check (model: string, signal?: AbortSignal): Promise<ProviderRefusal | null> {
      let ids: string[]
      try {
        ids = await remoteModels(signal)
      } catch (err) {
        signal?.throwIfAborted()
        return { reason: `the remote API at ${origin} cannot list its models: ${errorMessage(err)}`, unknownModel: false }
      }
      return ids.includes(model) ? null : { reason: `the remote API at ${origin} offers no model "${model}"`, unknownModel: true }
    },
    async generate (request: ProviderRequest, signal?: AbortSignal): Promise<ProviderResult> {
      if (!Number.isInteger(request.maxTokens) || request.maxTokens < 0) throw new InvalidInputError('maxTokens must be a non-negative integer')
      const stream = request.onToken !== undefined
      const { path, chat, body } = bodyOf(request, stream)
      logger.debug({ model: request.model, path, stream }, 'remote completion')
      const { response, deadline } = await call('POST', path, body, signal)
      try {
        if (stream) return { ...await streamed(response, chat, request, deadline), route: { ...report } }
        const bytes = await readLimited(response, maxResponseBytes, deadline)
        if (chat) {
          const reply = parseJson(chatReply, bytes, 'a chat completion')
          const text = reply.choices[0].message.content ?? ''
          return { text, promptTokens: reply.usage?.prompt_tokens ?? 0, completionTokens: reply.usage?.completion_tokens ?? 0, finishReason: mapFinish(reply.choices[0].finish_reason), route: { ...report } }
        }
        const reply = parseJson(completionReply, bytes, 'a completion')
        return { text: reply.choices[0].text, promptTokens: reply.usage?.prompt_tokens ?? 0, completionTokens: reply.usage?.completion_tokens ?? 0, finishReason: mapFinish(reply.choices[0].finish_reason), route: { ...report } }
      } catch (err) {
        throw failure(err, signal, deadline)
      }
    },
    async close () {}
  }
}
