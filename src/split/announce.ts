import { freemem } from 'node:os'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { MeshLibp2p } from '../mesh/index.ts'
import { spanWeightBytes, type ModelManifest } from '../model/index.ts'
import { errorMessage, InvalidInputError, silentLogger, type Logger } from '../util/index.ts'
import { modelServersKey, spanServersKey } from './announce-keys.ts'
import type { ModelIdentity } from './capacity.ts'
import type { CapacityFigures, CapacityResponder } from './capacity-service.ts'
import { kvBytesPerPosition } from './plan-memory.ts'
import type { LayerServer } from './server.ts'

export interface LayerAnnouncerOptions {
  libp2p: MeshLibp2p
  /** A started layer server. */
  server: LayerServer
  /** This node's capacity responder (started), which answers for the announced model. */
  responder: CapacityResponder
  logger?: Logger
  /** Re-provide period (default 5 min). */
  refreshMs?: number
  /**
   * First retry while a provide reached no DHT peer (default 5 s, e.g. at start on an empty
   * table), doubling up to refreshMs.
   */
  retryMs?: number
  /** Deadline of one provide (default 30 s). */
  provideTimeoutMs?: number
  /** Free memory reported in the record (default os.freemem()). */
  freeMemory?: () => number
  /** The server's session filter (team-only serving): the record goes to the same peers. */
  acceptFrom?: (peer: PeerId) => boolean
}

export interface LayerAnnouncer {
  readonly model: ModelIdentity
  readonly keys: { model: CID, span: CID }
  start: () => Promise<void>
  /** Withdraws (see docs/split-inference.md, "Discovery and capacity records"). */
  stop: () => Promise<void>
  /** Provides both keys now; resolves with the number of DHT peers that stored a record. */
  refresh: () => Promise<number>
}

/** The capacity figures of a layer server as it runs now. */
export function layerServerFigures (server: LayerServer, freeMemory: () => number): CapacityFigures {
  const manifest = server.manifest as ModelManifest
  const stats = server.stats()
  const layers = server.span.end - server.span.start
  const msPerLayer = Number.isFinite(stats.msPerLayer) && stats.msPerLayer > 0 ? stats.msPerLayer : 0
  return {
    start: server.span.start,
    end: server.span.end,
    msPerLayer,
    tokensPerSecond: msPerLayer > 0 ? 1000 / (msPerLayer * layers) : 0,
    maxSessions: server.limits.maxSessions,
    // a draining server takes no sessions: routing skips it
    freeSessions: stats.state === 'serving' ? Math.max(0, server.limits.maxSessions - stats.sessions) : 0,
    maxLength: server.limits.maxLength,
    freeMemoryBytes: freeMemory(),
    spanWeightBytes: spanWeightBytes(manifest, { start: server.span.start, end: server.span.end, embed: false, lmHead: false }),
    kvBytesPerPosition: kvBytesPerPosition(manifest.spec, layers)
  }
}

/**
 * Announces a running layer server: DHT provider records on the model key and the span key
 * (src/split/announce-keys.ts), re-provided every refreshMs, and its signed capacity record
 * offered through the node's capacity responder. Stopping withdraws: no more re-providing, this
 * node's own provider entries removed (kad-dht cancelReprovide), and the capacity record turned
 * into a signed withdrawn record. Provider records already stored on other DHT peers cannot be
 * recalled (Kademlia has no un-provide); they lapse after kad-dht's provider validity (48 h), and
 * until then a client that follows one gets the withdrawn record (or no answer) and drops it.
 */
export function createLayerAnnouncer (options: LayerAnnouncerOptions): LayerAnnouncer {
  const logger = (options.logger ?? silentLogger()).child({ module: 'split-announce' })
  const manifest = options.server.manifest
  if (manifest == null) throw new InvalidInputError('announce a layer server after it started')
  const model: ModelIdentity = { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }
  const keys = { model: modelServersKey(model), span: spanServersKey(model, options.server.span) }
  const refreshMs = options.refreshMs ?? 300_000
  const retryMs = options.retryMs ?? 5_000
  const provideTimeoutMs = options.provideTimeoutMs ?? 30_000
  const freeMemory = options.freeMemory ?? freemem
  const dht = options.libp2p.services.dht
  let controller: AbortController | null = null
  let timer: NodeJS.Timeout | null = null
  let inFlight: Promise<number> | null = null
  let withdraw: (() => void) | null = null
  let backoffMs = retryMs

  const provideOne = async (key: CID, signal: AbortSignal): Promise<number> => {
    let stored = 0
    try {
      for await (const event of dht.provide(key, { signal: AbortSignal.any([signal, AbortSignal.timeout(provideTimeoutMs)]) })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') stored++
      }
    } catch (err) {
      // an empty routing table or a deadline ends a provide; the next refresh tries again
      logger.debug({ key: key.toString(), err: errorMessage(err), stored }, 'provide ended early')
    }
    return stored
  }

  const refresh = async (): Promise<number> => {
    const signal = controller?.signal
    if (signal == null || signal.aborted) return 0
    if (inFlight != null) return await inFlight
    inFlight = (async () => {
      const counts = await Promise.all([provideOne(keys.model, signal), provideOne(keys.span, signal)])
      return Math.min(...counts)
    })()
    try {
      return await inFlight
    } finally {
      inFlight = null
    }
  }

  const schedule = (delayMs: number): void => {
    if (controller == null || controller.signal.aborted) return
    timer = setTimeout(() => {
      timer = null
      void refresh().then((stored) => {
        logger.debug({ stored, span: options.server.span }, 'layer server announced')
        if (stored > 0) {
          backoffMs = retryMs
          schedule(refreshMs)
        } else {
          schedule(Math.min(backoffMs, refreshMs))
          backoffMs = Math.min(backoffMs * 2, refreshMs)
        }
      })
    }, delayMs)
    timer.unref()
  }

  return {
    model,
    keys,
    refresh,
    async start () {
      if (controller != null) return
      controller = new AbortController()
      withdraw = options.responder.offer({ model, describe: () => layerServerFigures(options.server, freeMemory), acceptFrom: options.acceptFrom }).withdraw
      schedule(0)
      logger.info({ model: model.weightsSha256.slice(0, 12), span: options.server.span }, 'announcing layer server')
    },
    async stop () {
      if (controller == null) return
      controller.abort(new Error('the announcement stopped'))
      controller = null
      if (timer != null) clearTimeout(timer)
      timer = null
      await inFlight?.catch(() => 0)
      withdraw?.()
      withdraw = null
      for (const key of [keys.model, keys.span]) {
        await dht.cancelReprovide(key).catch((err: unknown) => { logger.debug({ err: errorMessage(err) }, 'cancelReprovide failed') })
      }
      logger.info({ model: model.weightsSha256.slice(0, 12), span: options.server.span }, 'layer server announcement withdrawn')
    }
  }
}
