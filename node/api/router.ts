import type { IncomingMessage, ServerResponse } from 'node:http'
import type { z } from 'zod'
import type { Permagent } from '../../src/permagent.ts'

/**
 * What a control-API route handler gets. To add routes: write node/api/routes/<module>.ts exporting
 * a `Route[]`, and list it in node/api/routes/index.ts.
 */
export interface RouteContext {
  node: Permagent
  /** The JSON body, already parsed (undefined for GET). Validate it with `parseBody`. */
  body: unknown
  params: Record<string, string>
  query: URLSearchParams
  signal: AbortSignal
  request: IncomingMessage
  response: ServerResponse
  /** Asks the daemon to shut down after this reply is sent. */
  requestShutdown: () => void
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** A path with optional :params, e.g. /api/brain/memories/:id */
  path: string
  /**
   * Returns the JSON reply, or `undefined` when the handler wrote the response itself (streaming).
   * Throw a PermagentError for a typed error reply.
   */
  handler: (context: RouteContext) => Promise<unknown>
  /** Body size limit for this route (default 1 MiB). */
  maxBodyBytes?: number
}

export interface CompiledRoute extends Route {
  pattern: RegExp
  paramNames: string[]
}

export function compileRoute (route: Route): CompiledRoute {
  const paramNames: string[] = []
  const source = route.path.split('/').map((segment) => {
    if (segment.startsWith(':')) {
      paramNames.push(segment.slice(1))
      return '([^/]+)'
    }
    return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  }).join('/')
  return { ...route, pattern: new RegExp(`^${source}$`), paramNames }
}

export type BodySchema<T> = z.ZodType<T>
