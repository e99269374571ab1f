import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Permagent } from '../../src/permagent.ts'
import { PermagentError } from '../../src/util/errors.ts'
import type { Logger } from '../../src/util/logger.ts'
import { compileRoute, type CompiledRoute, type Route } from './router.ts'
import { tokenMatches } from './token.ts'

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

export interface ControlApiOptions {
  node: Permagent
  token: string
  port: number
  routes: Route[]
  logger: Logger
  onShutdownRequested: () => void
}

export interface ControlApi {
  readonly url: string
  stop: () => Promise<void>
}

export class ApiListenError extends PermagentError {}

/** Maps error codes to HTTP statuses; anything unlisted is a 400 when it is ours, else 500. */
function statusFor (err: PermagentError): number {
  if (err.code === 'ERR_NOT_FOUND' || err.code.endsWith('_NOT_FOUND')) return 404
  if (err.code === 'ERR_TOO_LARGE' || err.code === 'ERR_BODY_TOO_LARGE') return 413
  if (err.code === 'ERR_CONFLICT' || err.code.endsWith('_CONFLICT')) return 409
  if (err.code === 'ERR_UNAVAILABLE') return 503
  if (err.code === 'ERR_INTERNAL') return 500
  return 400
}

function sendJson (response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  response.end(text)
}

async function readBody (request: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(request.headers['content-length'] ?? 0)
  if (declared > limit) throw new PermagentError('ERR_BODY_TOO_LARGE', `request body is ${declared} bytes; the limit is ${limit}`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request) {
    size += (chunk as Buffer).length
    if (size > limit) throw new PermagentError('ERR_BODY_TOO_LARGE', `request body exceeds the ${limit}-byte limit`)
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return undefined
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    return JSON.parse(text)
  } catch {
    throw new PermagentError('ERR_INVALID_JSON', 'request body is not valid JSON')
  }
}

/**
 * The control API: HTTP on 127.0.0.1 only, every request authenticated with the bearer token kept
 * in the data dir, JSON in and out, typed error replies `{ error: { code, message } }`.
 */
export async function startControlApi (options: ControlApiOptions): Promise<ControlApi> {
  const routes: CompiledRoute[] = options.routes.map(compileRoute)
  const inFlight = new Set<AbortController>()

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    if (!tokenMatches(options.token, request.headers.authorization)) {
      response.setHeader('www-authenticate', 'Bearer realm="permagent"')
      sendJson(response, 401, { error: { code: 'ERR_UNAUTHORIZED', message: 'missing or wrong bearer token (it is in <data-dir>/api-token)' } })
      return
    }
    const url = new URL(request.url ?? '/', 'http://127.0.0.1')
    const candidates = routes.filter((r) => r.pattern.test(url.pathname))
    if (candidates.length === 0) {
      sendJson(response, 404, { error: { code: 'ERR_NOT_FOUND', message: `no route ${url.pathname}` } })
      return
    }
    const route = candidates.find((r) => r.method === request.method)
    if (route == null) {
      response.setHeader('allow', candidates.map((r) => r.method).join(', '))
      sendJson(response, 405, { error: { code: 'ERR_METHOD_NOT_ALLOWED', message: `${request.method ?? ''} is not allowed on ${url.pathname}` } })
      return
    }
    const match = route.pattern.exec(url.pathname)
    const params: Record<string, string> = {}
    route.paramNames.forEach((name, i) => { params[name] = decodeURIComponent(match?.[i + 1] ?? '') })
    const controller = new AbortController()
    inFlight.add(controller)
    response.on('close', () => { if (!response.writableFinished) controller.abort() })
    let shutdownRequested = false
    try {
      const body = request.method === 'GET' ? undefined : await readBody(request, route.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES)
      const result = await route.handler({
        node: options.node,
        body,
        params,
        query: url.searchParams,
        signal: controller.signal,
        request,
        response,
        requestShutdown: () => { shutdownRequested = true }
      })
      if (result !== undefined && !response.headersSent) sendJson(response, 200, result)
    } catch (err) {
      if (response.headersSent) {
        response.destroy(err as Error)
      } else if (err instanceof PermagentError) {
        sendJson(response, statusFor(err), { error: { code: err.code, message: err.message } })
      } else {
        options.logger.error({ err, path: url.pathname }, 'control API handler failed')
        sendJson(response, 500, { error: { code: 'ERR_INTERNAL', message: 'internal error; see the daemon log' } })
      }
    } finally {
      inFlight.delete(controller)
    }
    if (shutdownRequested) options.onShutdownRequested()
  }

  const server: Server = createServer((request, response) => { void handle(request, response) })
  server.requestTimeout = 0
  server.headersTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(new ApiListenError('ERR_ADDRESS_IN_USE', `the control API port ${options.port} on 127.0.0.1 is already in use (another daemon? choose another with --api-port, or 0 for any free port)`))
      } else {
        reject(new ApiListenError('ERR_API_LISTEN', `the control API cannot listen on 127.0.0.1:${options.port}: ${err.message}`))
      }
    })
    // loopback only: the control API is never reachable from the network
    server.listen(options.port, '127.0.0.1', () => { resolve() })
  })
  const address = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    async stop () {
      for (const controller of inFlight) controller.abort()
      await new Promise<void>((resolve) => {
        server.close(() => { resolve() })
        server.closeAllConnections()
      })
    }
  }
}
