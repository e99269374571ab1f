import type { Libp2p, PeerId } from '@libp2p/interface'
import { openChannel, type MessageChannel } from '../mesh/index.ts'
import { loadManifest, type ModelManifest } from '../model/index.ts'
import type { InferInfo } from '../pb/infer.ts'
import { errorMessage, InvalidInputError, PermagentError } from '../util/index.ts'
import { MeshModel, type MeshHop, type MeshModelOptions } from './client.ts'
import { INFER_ERRORS, SplitInferenceError } from './errors.ts'
import { bytesToHex, exchangeInfer, INFER_PROTOCOL, responseKind } from './protocol.ts'

/** What a layer server told us about itself, and the round trip we measured to it. */
export interface ServerInfo {
  peer: PeerId
  start: number
  end: number
  maxLength: number
  maxStepRows: number
  freeSessions: number
  /** The server's measured compute of one decode row per layer. */
  msPerLayer: number
  /** Best of the measured info round trips (stream already open), ms. */
  rttMs: number
}

export interface ProbeResult {
  servers: ServerInfo[]
  failed: Array<{ peer: PeerId, code: string, message: string }>
}

/** Info replies are tiny; anything larger is refused. */
const INFO_MESSAGE_BYTES = 4096

/**
 * Asks each peer what it serves (one stream each, in parallel), timing `rounds` info round trips
 * and keeping the fastest; peers that run another model, fail or time out are listed in `failed`.
 */
export async function probeServers (libp2p: Libp2p, peers: readonly PeerId[], manifest: Pick<ModelManifest, 'configSha256' | 'weightsSha256'>, options: { rounds?: number, dialMs?: number, replyMs?: number, signal?: AbortSignal } = {}): Promise<ProbeResult> {
  const rounds = options.rounds ?? 3
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 32) throw new InvalidInputError('rounds must be in 1..32')
  const replyMs = options.replyMs ?? 10_000
  const result: ProbeResult = { servers: [], failed: [] }
  await Promise.all(peers.map(async (peer) => {
    let channel: MessageChannel | undefined
    try {
      channel = await openChannel(libp2p, peer, INFER_PROTOCOL, { maxMessageBytes: INFO_MESSAGE_BYTES, dialMs: options.dialMs, signal: options.signal })
      let best = Infinity
      let info: InferInfo | undefined
      for (let i = 0; i < rounds; i++) {
        const started = performance.now()
        const response = await exchangeInfer(channel, { info: {} }, options.signal ?? new AbortController().signal, replyMs)
        best = Math.min(best, performance.now() - started)
        const kind = responseKind(response)
        if (kind !== 'info') throw new SplitInferenceError(INFER_ERRORS.protocol, `an info request answered with ${kind}`)
        info = response.info
      }
      const got = info as InferInfo
      if (bytesToHex(got.configSha256) !== manifest.configSha256 || bytesToHex(got.weightsSha256) !== manifest.weightsSha256) {
        throw new SplitInferenceError(INFER_ERRORS.wrongModel, 'the server runs another model')
      }
      const msPerLayer = Number.isFinite(got.msPerLayer) && got.msPerLayer >= 0 ? got.msPerLayer : Infinity
      result.servers.push({ peer, start: got.layerStart, end: got.layerEnd, maxLength: got.maxLength, maxStepRows: got.maxStepRows, freeSessions: got.freeSessions, msPerLayer, rttMs: best })
      await channel.close(AbortSignal.timeout(replyMs))
    } catch (err) {
      channel?.abort(err as Error)
      result.failed.push({ peer, code: err instanceof PermagentError ? err.code : 'ERR_INTERNAL', message: errorMessage(err) })
    }
  }))
  return result
}

export interface RouteOptions {
  layers: number
  headLayers: number
  tailLayers: number
  /** Positions the session needs; servers that hold fewer (or whole steps of fewer rows) are skipped. */
  maxLength?: number
  /** Cost added per hop besides the round trip (serialization, framing), ms (default 0). */
  hopOverheadMs?: number
}

export interface Route {
  /** Hops in order; each lists the chosen server first, then the others for the same span by cost (failover). */
  chain: MeshHop[]
  /** Expected latency of one decode token through the middle, ms: per hop the round trip plus the span's compute. */
  expectedMsPerToken: number
}

/**
 * The chain of servers with the lowest expected per-token latency: a shortest path over layer
 * boundaries from headLayers to layers - tailLayers, each server an edge costing its round trip
 * plus its per-layer compute times its layers.
 */
export function planRoute (servers: readonly ServerInfo[], options: RouteOptions): Route {
  const from = options.headLayers
  const to = options.layers - options.tailLayers
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 1 && to > from && to < options.layers)) throw new InvalidInputError(`no middle between ${from} and ${to}`)
  const need = options.maxLength ?? 1
  const overhead = options.hopOverheadMs ?? 0
  const usable = servers.filter((s) => s.start >= from && s.end <= to && s.end > s.start && s.freeSessions > 0 && s.maxLength >= need && s.maxStepRows >= need && Number.isFinite(s.msPerLayer + s.rttMs))
  const cost = (s: ServerInfo): number => s.rttMs + s.msPerLayer * (s.end - s.start) + overhead
  const best = new Array<number>(to + 1).fill(Infinity)
  const via = new Array<ServerInfo | null>(to + 1).fill(null)
  best[from] = 0
  // spans only move forward, so boundaries in increasing order are a topological order
  for (let b = from; b < to; b++) {
    if (best[b] === Infinity) continue
    for (const s of usable) {
      if (s.start !== b) continue
      const total = best[b] + cost(s)
      if (total < best[s.end]) { best[s.end] = total; via[s.end] = s }
    }
  }
  if (best[to] === Infinity) throw new SplitInferenceError(INFER_ERRORS.noRoute, `the servers found do not cover layers ${from}-${to}`)
  const picked: ServerInfo[] = []
  for (let b = to; b > from;) {
    const s = via[b] as ServerInfo
    picked.unshift(s)
    b = s.start
  }
  const chain = picked.map((s) => ({
    start: s.start,
    end: s.end,
    peers: [s, ...usable.filter((o) => o !== s && o.start === s.start && o.end === s.end).sort((a, b) => cost(a) - cost(b))].map((o) => o.peer)
  }))
  return { chain, expectedMsPerToken: best[to] }
}

export interface RoutedModelOptions extends Omit<MeshModelOptions, 'chain'> {
  /** Candidate layer servers; each is probed, the chain is planned over the ones that answer. */
  peers: PeerId[]
  /** Positions the sessions need (default 512). */
  maxLength?: number
  hopOverheadMs?: number
  signal?: AbortSignal
}

/** Probes the peers, plans the fastest chain over them (`planRoute`), and opens a MeshModel on it. */
export async function openRoutedModel (options: RoutedModelOptions): Promise<{ model: MeshModel, route: Route, probe: ProbeResult }> {
  const manifest = await loadManifest(options.dataDir, options.name)
  const probe = await probeServers(options.libp2p, options.peers, manifest, { dialMs: options.timeouts?.dialMs, replyMs: options.timeouts?.replyMs, signal: options.signal })
  const route = planRoute(probe.servers, { layers: manifest.spec.numLayers, headLayers: options.headLayers, tailLayers: options.tailLayers, maxLength: options.maxLength ?? 512, hopOverheadMs: options.hopOverheadMs })
  const model = await MeshModel.open({ ...options, chain: route.chain })
  return { model, route, probe }
}
