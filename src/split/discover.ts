import type { Libp2p, PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { MeshLibp2p } from '../mesh/index.ts'
import { loadManifest } from '../model/index.ts'
import { errorMessage, PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { modelServersKey, spanServersKey } from './announce-keys.ts'
import type { CapacityInfo, ModelIdentity } from './capacity.ts'
import { fetchCapacityRecord } from './capacity-protocol.ts'
import { INFER_PROTOCOL } from './protocol.ts'

export interface DiscoverOptions {
  signal?: AbortSignal
  /** Deadline of the DHT lookup (default 10 s); what was found by then is used. */
  timeoutMs?: number
  /** Most providers taken from the DHT (default 64). */
  max?: number
  logger?: Logger
}

/**
 * Peers the DHT names as serving layers of `model` (any span, or exactly `span`), never this node.
 * Their addresses go to the peer store so they can be dialled without being connected first.
 */
export async function findModelServers (libp2p: MeshLibp2p, model: ModelIdentity, options: DiscoverOptions & { span?: { start: number, end: number } } = {}): Promise<PeerId[]> {
  const key: CID = options.span != null ? spanServersKey(model, options.span) : modelServersKey(model)
  const max = options.max ?? 64
  const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 10_000), ...(options.signal != null ? [options.signal] : [])])
  const found = new Map<string, PeerId>()
  try {
    for await (const provider of libp2p.contentRouting.findProviders(key, { signal })) {
      if (provider.id.equals(libp2p.peerId) || found.has(provider.id.toString())) continue
      if (provider.multiaddrs.length > 0) await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
      found.set(provider.id.toString(), provider.id)
      if (found.size >= max) break
    }
  } catch (err) {
    // a deadline or an empty routing table ends the lookup; what was found is used
    if (options.signal?.aborted === true) throw new PermagentError('ERR_ABORTED', 'the layer server lookup was aborted', { cause: err })
    ;(options.logger ?? silentLogger()).debug({ err: errorMessage(err), found: found.size }, 'layer server lookup ended')
  }
  return [...found.values()]
}

/**
 * Peers that may serve layers: connected peers that identify says speak /permagent/infer/1.0.0
 * first, then, given the model, the servers its DHT provider records name (not connected yet,
 * perhaps), then every other connected peer (a span started after we connected is only announced
 * by an identify push); probing drops the ones that do not answer the protocol.
 */
export async function layerServerCandidates (libp2p: Libp2p, options: DiscoverOptions & { model?: ModelIdentity } = {}): Promise<PeerId[]> {
  const known: PeerId[] = []
  const others: PeerId[] = []
  for (const peer of libp2p.getPeers()) {
    try {
      const info = await libp2p.peerStore.get(peer)
      if (info.protocols.includes(INFER_PROTOCOL)) { known.push(peer); continue }
    } catch {}
    others.push(peer)
  }
  const announced = options.model != null ? await findModelServers(libp2p as MeshLibp2p, options.model, options) : []
  const seen = new Set<string>()
  const out: PeerId[] = []
  for (const peer of [...known, ...announced, ...others]) {
    if (seen.has(peer.toString())) continue
    seen.add(peer.toString())
    out.push(peer)
  }
  return out
}

/** `layerServerCandidates` for a model in this node's store (its identity read from the manifest). */
export async function storedModelCandidates (libp2p: Libp2p, dataDir: string, name: string, options: DiscoverOptions = {}): Promise<PeerId[]> {
  const manifest = await loadManifest(dataDir, name)
  return await layerServerCandidates(libp2p, { ...options, model: { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 } })
}

export interface ModelServers {
  /** Verified, current records of servers taking sessions. */
  servers: CapacityInfo[]
  /** Servers whose signed record says they stopped serving the model. */
  withdrawn: CapacityInfo[]
  /** Candidates that gave no valid record (not a server, refused, bad signature, expired…). */
  failed: Array<{ peer: PeerId, code: string, message: string }>
}

/**
 * The servers of a model with their verified capacity records: candidates from the DHT and the
 * connected peers (at most `max`, default 64), each asked for its record over
 * /permagent/infer/capacity/1.0.0 in parallel.
 */
export async function discoverModelServers (libp2p: MeshLibp2p, model: ModelIdentity, options: DiscoverOptions & { recordTimeoutMs?: number } = {}): Promise<ModelServers> {
  // likely servers come first; the cap bounds the streams opened on a node with many connections
  const candidates = (await layerServerCandidates(libp2p, { ...options, model })).slice(0, options.max ?? 64)
  const result: ModelServers = { servers: [], withdrawn: [], failed: [] }
  await Promise.all(candidates.map(async (peer) => {
    try {
      const { info } = await fetchCapacityRecord(libp2p, peer, model, { signal: options.signal, timeoutMs: options.recordTimeoutMs ?? 5_000 })
      if (info.withdrawn) result.withdrawn.push(info)
      else result.servers.push(info)
    } catch (err) {
      result.failed.push({ peer, code: err instanceof PermagentError ? err.code : 'ERR_INTERNAL', message: errorMessage(err) })
    }
  }))
  const order = (a: { peer: PeerId }, b: { peer: PeerId }): number => a.peer.toString() < b.peer.toString() ? -1 : 1
  result.servers.sort(order)
  result.withdrawn.sort(order)
  return result
}
