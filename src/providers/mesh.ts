import type { Libp2p, PeerId } from '@libp2p/interface'
import { listModels, loadManifest } from '../model/index.ts'
import { INFER_ERRORS, layerServerCandidates, openRoutedModel, planRoute, probeServers, SplitInferenceError, storedModelCandidates, type MeshTimeouts, type RoutedModelOptions } from '../split/index.ts'
import type { UsxfQuantization } from '../usxf/index.ts'
import { errorMessage, silentLogger, type Logger } from '../util/index.ts'
import { admittedLibp2p, type PeerAdmission } from './admission.ts'
import type { InferenceProvider, ProviderModel, ProviderRefusal, ProviderRequest, ProviderResult } from './types.ts'

export interface MeshProviderOptions {
  libp2p: Libp2p
  dataDir: string
  /** Which peers may serve (team-mesh: current members of one team; mesh: whatever the node admits). */
  admission: PeerAdmission
  /**
   * Candidate layer servers of a model before admission (default: connected peers and the servers
   * the DHT names for the model, `storedModelCandidates`; listing models asks connected peers only).
   */
  candidates?: (model: string, signal?: AbortSignal) => Promise<PeerId[]>
  /** Deadline of the default DHT lookup (default 10 s). */
  discoveryMs?: number
  /** Layers kept here at the start and the end (default 1 each). */
  headLayers?: number
  tailLayers?: number
  /** Activations on the wire (default f16). */
  quantization?: UsxfQuantization
  timeouts?: Partial<MeshTimeouts>
  threads?: number
  /** Further MeshModel and routing options (context, ban time, positions, hop overhead, ...). */
  routing?: Partial<Omit<RoutedModelOptions, 'libp2p' | 'dataDir' | 'name' | 'peers' | 'signal' | 'logger' | 'headLayers' | 'tailLayers'>>
  /** Round-trip deadline of one probe while listing models (default 3 s). */
  listProbeMs?: number
  logger?: Logger
}

/**
 * Split inference as a provider: a stored model's head and tail run here, its middle on layer
 * servers the admission allows. Candidates are filtered before anything is sent (a refused peer
 * is not even probed), and every stream the run opens goes through `admittedLibp2p`, so a refused
 * peer is never sent activations, whatever answered or was planned.
 */
export function createMeshProvider (options: MeshProviderOptions): InferenceProvider {
  const { admission } = options
  const logger = (options.logger ?? silentLogger()).child({ provider: admission.privacy, ...(admission.team != null ? { team: admission.team } : {}) })
  const libp2p = admittedLibp2p(options.libp2p, admission)
  const headLayers = options.headLayers ?? 1
  const tailLayers = options.tailLayers ?? 1
  const id = admission.privacy
  const base = { provider: id, kind: 'mesh', privacy: admission.privacy, ...(admission.team != null ? { team: admission.team } : {}) } as const

  const discover = options.candidates ?? (async (model: string, signal?: AbortSignal) => await storedModelCandidates(options.libp2p, options.dataDir, model, { signal, timeoutMs: options.discoveryMs ?? 10_000, logger }))

  /** Candidates split by admission; the refused ones are only counted (for error messages). */
  const admit = (all: PeerId[]): { admitted: PeerId[], refused: number } => {
    const admitted = all.filter((peer) => admission.allows(peer))
    return { admitted, refused: all.length - admitted.length }
  }

  const refusedNote = (refused: number): string => refused === 0
    ? ''
    : admission.team != null
      ? `; ${refused} candidate peer(s) are not members of team ${admission.team} and were not asked`
      : `; ${refused} candidate peer(s) are refused by this node's connection policy`

  // cheap on purpose: finding servers (DHT, probes) is generate's job, and its failure falls through
  const check = async (name: string): Promise<ProviderRefusal | null> => {
    try {
      await loadManifest(options.dataDir, name)
    } catch {
      return { reason: `no stored model "${name}" on this node (the mesh client runs its first and last layers)`, unknownModel: true }
    }
    return null
  }

  return {
    id,
    kind: 'mesh',
    privacy: admission.privacy,
    check,
    async models (signal?: AbortSignal): Promise<ProviderModel[]> {
      const { admitted } = admit(await layerServerCandidates(options.libp2p))
      if (admitted.length === 0) return []
      const out: ProviderModel[] = []
      for (const summary of await listModels(options.dataDir)) {
        const manifest = await loadManifest(options.dataDir, summary.name)
        const probe = await probeServers(libp2p, admitted, manifest, { rounds: 1, replyMs: options.listProbeMs ?? 3_000, dialMs: options.listProbeMs ?? 3_000, signal })
        try {
          planRoute(probe.servers, { layers: manifest.spec.numLayers, headLayers, tailLayers })
          out.push({ id: summary.name, ...base })
        } catch {
          // the servers found do not cover this model's middle: not offered over the mesh
        }
      }
      return out
    },
    async generate (request: ProviderRequest, signal?: AbortSignal): Promise<ProviderResult> {
      const { admitted, refused } = admit(await discover(request.model, signal))
      if (admitted.length === 0) {
        throw new SplitInferenceError(INFER_ERRORS.noRoute, `no peer, connected or announced on the DHT, may serve layers of ${request.model}${refusedNote(refused)}; connect to peers that run \`permagent serve MODEL --layers A-B\``)
      }
      let opened
      try {
        opened = await openRoutedModel({
          ...options.routing,
          libp2p,
          dataDir: options.dataDir,
          name: request.model,
          headLayers,
          tailLayers,
          quantization: options.quantization ?? options.routing?.quantization,
          timeouts: options.timeouts ?? options.routing?.timeouts,
          threads: options.threads ?? options.routing?.threads,
          peers: admitted,
          signal,
          logger
        })
      } catch (err) {
        if (err instanceof SplitInferenceError && err.code === INFER_ERRORS.noRoute) {
          throw new SplitInferenceError(INFER_ERRORS.noRoute, `${errorMessage(err)}${refusedNote(refused)}`, { cause: err })
        }
        throw err
      }
      const { model, route } = opened
      logger.debug({ model: request.model, hops: route.chain.map((h) => `${h.start}-${h.end}@${h.peers[0]?.toString() ?? ''}`) }, 'mesh route planned')
      try {
        const result = await model.generate({
          ...(request.promptIds !== undefined ? { promptIds: request.promptIds } : request.messages !== undefined ? { messages: request.messages } : { prompt: request.prompt }),
          maxTokens: request.maxTokens,
          sampling: request.sampling,
          stopTokens: request.stopTokens,
          signal,
          onToken: request.onToken !== undefined ? (e) => { request.onToken?.({ text: e.text, id: e.id }) } : undefined
        })
        return {
          text: result.text,
          tokens: result.tokens,
          promptIds: result.promptTokens,
          promptTokens: result.promptTokens.length,
          completionTokens: result.tokens.length,
          finishReason: result.finishReason,
          prefillMs: result.prefillMs,
          decodeMs: result.decodeMs,
          route: {
            ...base,
            hops: route.chain.map((hop) => ({ start: hop.start, end: hop.end, peer: hop.peers[0].toString() })),
            failovers: result.failovers,
            handoffs: result.handoffs ?? []
          }
        }
      } finally {
        await model.close()
      }
    },
    async close () {}
  }
}
