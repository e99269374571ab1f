import { errorMessage, silentLogger, type Logger } from '../util/index.ts'
import type { ProviderResolver } from './resolver.ts'
import type { ProviderSettings } from './settings.ts'

export interface CurrentResolverOptions {
  /** Reads the settings now (the daemon: config.json's `providers` section, validated). */
  load: () => Promise<ProviderSettings>
  build: (settings: ProviderSettings) => ProviderResolver
  logger?: Logger
}

export interface CurrentResolver {
  /**
   * Runs `use` with the resolver of the settings as they are now: loaded on every call, a new
   * resolver built only when they changed. A load error (an invalid config) rejects the call.
   */
  use: <T>(use: (resolver: ProviderResolver, settings: ProviderSettings) => Promise<T>) => Promise<T>
  /** Closes the resolvers once the calls using them are done. */
  close: () => Promise<void>
}

interface Entry {
  key: string
  settings: ProviderSettings
  resolver: ProviderResolver
  /** Which load gave these settings (loads run concurrently and may finish out of order). */
  loaded: number
  users: number
  retired: boolean
}

/**
 * The resolver that follows the settings: each request reads them (for the daemon a small file and
 * a schema check), so an edited `providers` section applies to the next request, and every request
 * sees one consistent snapshot. A resolver whose settings changed is closed when the last request
 * using it ends (its opened local models are freed; running requests are not cut off).
 */
export function createCurrentResolver (options: CurrentResolverOptions): CurrentResolver {
  const logger = options.logger ?? silentLogger()
  let current: Entry | null = null
  let loads = 0
  const retired = new Set<Entry>()

  const closeEntry = (entry: Entry): void => {
    retired.delete(entry)
    entry.resolver.close().catch((err: unknown) => { logger.warn({ err: errorMessage(err) }, 'a replaced provider resolver did not close cleanly') })
  }

  const acquire = async (): Promise<Entry> => {
    const loaded = ++loads
    const settings = await options.load()
    // settings come from a schema parse, so equal settings serialize equally
    const key = JSON.stringify(settings)
    // a load that finished after a newer one is not allowed to bring older settings back
    if (current === null || (current.key !== key && current.loaded < loaded)) {
      const previous = current
      current = { key, settings, resolver: options.build(settings), loaded, users: 0, retired: false }
      if (previous !== null) {
        logger.info('provider settings changed; new requests use them')
        previous.retired = true
        if (previous.users === 0) closeEntry(previous)
        else retired.add(previous)
      }
    }
    current.users++
    return current
  }

  const release = (entry: Entry): void => {
    entry.users--
    if (entry.retired && entry.users === 0) closeEntry(entry)
  }

  return {
    async use (use) {
      const entry = await acquire()
      try {
        return await use(entry.resolver, entry.settings)
      } finally {
        release(entry)
      }
    },
    async close () {
      const entries = [...retired, ...(current !== null ? [current] : [])]
      current = null
      retired.clear()
      await Promise.allSettled(entries.map(async (entry) => { await entry.resolver.close() }))
    }
  }
}
