import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Identity } from '../identity/index.ts'
import { handleRequests } from '../mesh/index.ts'
import { PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { PERMAGENT_VERSION } from '../version.ts'
import { signCapacityRecord, type CapacityInfo, type ModelIdentity } from './capacity.ts'
import { capacityProtocol } from './capacity-protocol.ts'
import { INFER_ERRORS } from './errors.ts'
import { bytesToHex } from './protocol.ts'

/** The figures of a record that change while serving; read afresh for every request. */
export type CapacityFigures = Pick<CapacityInfo, 'start' | 'end' | 'msPerLayer' | 'tokensPerSecond' | 'maxSessions' | 'freeSessions' | 'maxLength' | 'freeMemoryBytes' | 'spanWeightBytes' | 'kvBytesPerPosition'>

export interface CapacityOffer {
  model: ModelIdentity
  describe: () => CapacityFigures
  /** Peers given the record (default any): a team-only server answers its team only. */
  acceptFrom?: (peer: PeerId) => boolean
}

export interface CapacityResponderOptions {
  libp2p: Libp2p
  identity: Identity
  logger?: Logger
  /** How long an issued record is valid (default 2 min; records are fetched fresh, so short). */
  recordTtlMs?: number
  /**
   * How long a withdrawn model keeps being answered with a signed "withdrawn" record (default
   * 48 h: kad-dht keeps provider records that long on the peers that stored them).
   */
  withdrawnRetentionMs?: number
  now?: () => number
}

export interface CapacityResponder {
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Answers for a model from now on; `withdraw()` turns its answer into a signed withdrawn record. */
  offer: (offer: CapacityOffer) => { withdraw: () => void }
  /** The signed record this node would answer `peer` for `model` now, or null (not served, refused). */
  recordFor: (model: ModelIdentity, peer?: PeerId) => Uint8Array | null
}

interface Entry {
  offer: CapacityOffer
  /** Figures when withdrawn (kept for the withdrawn record), and when. */
  withdrawn: { at: number, figures: CapacityFigures } | null
}

const MAX_WITHDRAWN = 64

const keyOf = (model: ModelIdentity): string => `${model.configSha256}/${model.weightsSha256}`

/**
 * Serves /permagent/infer/capacity/1.0.0 for this node: one signed CapacityRecord per model it
 * offers, signed at each request so the figures (free sessions, memory, measured speed) are
 * current. One responder per node: the protocol has one handler.
 */
export function createCapacityResponder (options: CapacityResponderOptions): CapacityResponder {
  const logger = (options.logger ?? silentLogger()).child({ module: 'split-capacity' })
  const now = options.now ?? Date.now
  const ttl = options.recordTtlMs ?? 120_000
  const retention = options.withdrawnRetentionMs ?? 48 * 3_600_000
  const entries = new Map<string, Entry>()
  let started = false

  const prune = (): void => {
    const withdrawn = [...entries].filter(([, e]) => e.withdrawn != null).sort(([, a], [, b]) => (a.withdrawn?.at ?? 0) - (b.withdrawn?.at ?? 0))
    const cutoff = now() - retention
    for (const [key, entry] of withdrawn) if ((entry.withdrawn?.at ?? 0) < cutoff) entries.delete(key)
    const left = withdrawn.filter(([key]) => entries.has(key))
    for (const [key] of left.slice(0, Math.max(0, left.length - MAX_WITHDRAWN))) entries.delete(key)
  }

  const recordFor = (model: ModelIdentity, peer?: PeerId): Uint8Array | null => {
    prune()
    const entry = entries.get(keyOf(model))
    if (entry == null) return null
    if (peer != null && !(entry.offer.acceptFrom?.(peer) ?? true)) return null
    const figures = entry.withdrawn?.figures ?? entry.offer.describe()
    const issuedAtMs = now()
    return signCapacityRecord(options.identity, {
      ...figures,
      freeSessions: entry.withdrawn != null ? 0 : figures.freeSessions,
      model: entry.offer.model,
      version: PERMAGENT_VERSION,
      issuedAtMs,
      expiresAtMs: issuedAtMs + ttl,
      withdrawn: entry.withdrawn != null,
      teamOnly: entry.offer.acceptFrom != null
    })
  }

  return {
    async start () {
      if (started) return
      await handleRequests(options.libp2p, capacityProtocol, async (request, context) => {
        const model = { configSha256: bytesToHex(request.configSha256), weightsSha256: bytesToHex(request.weightsSha256) }
        const entry = entries.get(keyOf(model))
        if (entry != null && !(entry.offer.acceptFrom?.(context.remotePeer) ?? true)) {
          throw new PermagentError(INFER_ERRORS.peerRefused, 'this server gives its capacity record to its team only')
        }
        const record = recordFor(model, context.remotePeer)
        if (record == null) throw new PermagentError('ERR_NOT_SERVING', `this node serves no layers of model ${model.weightsSha256.slice(0, 12)}…`)
        return record
      }, { logger, maxInboundStreams: 32, timeoutMs: 10_000 })
      started = true
    },
    async stop () {
      if (!started) return
      started = false
      await options.libp2p.unhandle(capacityProtocol.protocol)
    },
    offer (offer) {
      const key = keyOf(offer.model)
      const entry: Entry = { offer, withdrawn: null }
      entries.set(key, entry)
      return {
        withdraw: () => {
          if (entries.get(key) !== entry || entry.withdrawn != null) return
          entry.withdrawn = { at: now(), figures: offer.describe() }
          logger.debug({ model: offer.model.weightsSha256.slice(0, 12) }, 'capacity record withdrawn')
        }
      }
    },
    recordFor
  }
}
