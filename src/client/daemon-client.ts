import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PermagentError } from '../util/errors.ts'
import { processAlive } from '../util/process.ts'
import { readDaemonInfo, type DaemonInfo } from './daemon-info.ts'
import { ApiError, DaemonNotRunningError } from './errors.ts'

/** Reads the control API token of a data dir. */
export async function readApiToken (file: string): Promise<string> {
  const token = (await readFile(file, 'utf8')).trim()
  if (!/^[A-Za-z0-9_-]{32,128}$/.test(token)) throw new PermagentError('ERR_API_TOKEN', `${file} does not hold a valid API token; delete it and restart the daemon to make a new one`)
  return token
}

export interface ApiClient {
  readonly info: DaemonInfo
  call: <T = unknown>(method: string, path: string, body?: unknown, options?: { timeoutMs?: number }) => Promise<T>
  /** For streaming endpoints: the raw fetch Response after the status check. */
  raw: (method: string, path: string, body?: unknown, options?: { timeoutMs?: number }) => Promise<Response>
}

/**
 * Finds the daemon of a data dir through <data-dir>/daemon.json and talks to its control API with
 * the token in <data-dir>/api-token.
 */
export async function connectToDaemon (dataDir: string): Promise<ApiClient> {
  const paths = { root: dataDir, daemonInfo: join(dataDir, 'daemon.json'), apiToken: join(dataDir, 'api-token') }
  const info = await readDaemonInfo(paths.daemonInfo)
  if (info == null) throw new DaemonNotRunningError(paths.root)
  if (!processAlive(info.pid)) throw new DaemonNotRunningError(paths.root, `daemon.json names pid ${info.pid}, which is not running`)
  let token: string
  try {
    token = await readApiToken(paths.apiToken)
  } catch (err) {
    if (err instanceof PermagentError) throw err
    throw new PermagentError('ERR_API_TOKEN', `cannot read the API token ${paths.apiToken}: ${(err as Error).message}`)
  }
  const raw = async (method: string, path: string, body?: unknown, options: { timeoutMs?: number } = {}): Promise<Response> => {
    let response: Response
    try {
      response = await fetch(info.apiUrl + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(options.timeoutMs ?? 60_000)
      })
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') throw new PermagentError('ERR_TIMEOUT', `the daemon did not answer ${method} ${path} within ${options.timeoutMs ?? 60_000} ms`)
      throw new DaemonNotRunningError(paths.root, `${info.apiUrl} does not answer`)
    }
    if (!response.ok) {
      let code = 'ERR_API'
      let message = `${method} ${path} failed with HTTP ${response.status}`
      try {
        const json = await response.json() as { error?: { code?: string, message?: string } }
        code = json.error?.code ?? code
        message = json.error?.message ?? message
      } catch {}
      throw new ApiError(response.status, code, message)
    }
    return response
  }
  return {
    info,
    raw,
    async call<T> (method: string, path: string, body?: unknown, options?: { timeoutMs?: number }): Promise<T> {
      const response = await raw(method, path, body, options)
      return await response.json() as T
    }
  }
}
