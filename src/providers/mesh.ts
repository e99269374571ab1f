import type { Libp2p, PeerId } from '@libp2p/interface'
import { listModels, loadManifest } from '../model/index.ts'
import { INFER_ERRORS, openRoutedModel, planRoute, probeServers, SplitInferenceError, storedModelCandidates, type MeshGenerateResult, type MeshTimeouts, type RoutedModelOptions } from '../split/index.ts'
import type { UsxfQuantization } from '../usxf/index.ts'
import { errorMessage, PermagentError, silentLogger, type Logger } from '../util/index.ts'
import { admittedLibp2p, type PeerAdmission } from './admission.ts'
import { engineRequest, engineResult } from './engine-result.ts'
import { createFaultyPeers, type ExcludedPeer, type FaultyPeers } from './faulty-peers.ts'
import { DEFAULT_CANARIES, requestVerification, type VerifyDefaults } from './split-options.ts'
import type { InferenceProvider, ProviderModel, ProviderRefusal, ProviderRequest, ProviderResult, RouteReport } from './types.ts'

export interface MeshProviderOptions {
  libp2p: Libp2p
  dataDir: string
  /** Which peers may serve (team-mesh: current members of one team; mesh: whatever the node admits). */
  admission: PeerAdmission
  /**
   * Candidate layer servers of a model before admission (default: connected peers and the servers
   * the DHT names for the model, `storedModelCandidates`; used by listing too, with its deadline).
   */
  candidates?: (model: string, signal?: AbortSignal) => Promise<PeerId[]>
  /** Deadline of the default DHT lookup (default 10 s). */
  discoveryMs?: number
  /** Layers kept here at the start and the end (default 1 each). */
  headLayers?: number
  tailLayers?: number
  /** Activations on the wire (default f16); a request's `split.quantization` wins. */
  quantization?: UsxfQuantization
  /**
   * Verification of requests that do not say (default off); a request's `split.verify` wins
   * (`requestVerification`). Tolerance and referee come from `routing.verify`, if given.
   */
  verify?: VerifyDefaults
  timeouts?: Partial<MeshTimeouts>
  threads?: number
  /** Further MeshModel and routing options (context, ban time, positions, hop overhead, ...). */
  routing?: Partial<Omit<RoutedModelOptions, 'libp2p' | 'dataDir' | 'name' | 'peers' | 'signal' | 'logger' | 'headLayers' | 'tailLayers'>>
  /** Round-trip deadline of one probe while listing models (default 3 s). */
  listProbeMs?: number
  /** Deadline of each model's DHT lookup while listing models (default 2 s). */
  listDiscoveryMs?: number
  /** Deadline of a whole listing: lookups, dials and probes of every stored model (default 8 s). */
  listTimeoutMs?: number
  /** How long a listing is reused (default 10 s): `GET /v1/models` does not probe peers on every call. */
  listCacheMs?: number
  /**
   * Servers caught answering wrongly, not used again until they expire (default: this provider's
   * own list; the node shares one among its mesh providers).
   */
  faulty?: FaultyPeers
  logger?: Logger
}

/**
 * Split inference as a provider: a stored model's head and tail run here, its middle on layer
 * servers the admission allows. Candidates are filtered before anything is sent (a refused peer
 * is not even probed), and every stream the run opens goes through `admittedLibp2p`, so a refused
 * peer is never sent activations, whatever answered or was planned. A request's split options
 * (verification, wire quantization, local layers) go over the provider's defaults; with
 * verification on, the route reports the faults and checks, and servers caught answering wrongly
 * are left out of later requests (`faulty`).
 */
export function createMeshProvider (options: MeshProviderOptions): InferenceProvider {
  const { admission } = options
  const logger = (options.logger ?? silentLogger()).child({ provider: admission.privacy, ...(admission.team != null ? { team: admission.team } : {}) })
  const libp2p = admittedLibp2p(options.libp2p, admission)
  const headLayers = options.headLayers ?? 1
  const tailLayers = options.tailLayers ?? 1
  const id = admission.privacy
  const base = { provider: id, kind: 'mesh', privacy: admission.privacy, ...(admission.team != null ? { team: admission.team } : {}) } as const
  const listCacheMs = options.listCacheMs ?? 10_000
  // routing.verify (the MeshModel form) serves as the default when `verify` is not given
  const routingVerify = options.routing?.verify
  const verifyDefaults: VerifyDefaults | undefined = options.verify ?? (routingVerify !== undefined
    ? { rate: routingVerify.rate, canaries: typeof routingVerify.canaries === 'boolean' ? (routingVerify.canaries ? DEFAULT_CANARIES : 0) : routingVerify.canaries }
    : undefined)

  const discover = async (model: string, signal: AbortSignal | undefined, timeoutMs: number): Promise<PeerId[]> => options.candidates !== undefined
    ? await options.candidates(model, signal)
    : await storedModelCandidates(options.libp2p, options.dataDir, model, { signal, timeoutMs, logger })

  const faulty = options.faulty ?? createFaultyPeers()

  /**
   * Candidates split by admission and by earlier faults; the refused ones are only counted (for
   * error messages), the excluded ones are reported with why.
   */
  const admit = (all: PeerId[]): { admitted: PeerId[], refused: number, excluded: ExcludedPeer[] } => {
    const allowed = all.filter((peer) => admission.allows(peer))
    const excluded: ExcludedPeer[] = []
    const admitted = allowed.filter((peer) => {
      const why = faulty.excluded(peer.toString())
      if (why !== null) excluded.push(why)
      return why === null
    })
    return { admitted, refused: all.length - allowed.length, excluded }
  }

  const refusedNote = (refused: number, excluded: ExcludedPeer[] = []): string => (refused === 0
    ? ''
    : admission.team != null
      ? `; ${refused} candidate peer(s) are not members of team ${admission.team} and were not asked`
      : `; ${refused} candidate peer(s) are refused by this node's connection policy`) +
    (excluded.length === 0 ? '' : `; ${excluded.length} candidate peer(s) were caught answering wrongly and are excluded (${excluded.map((e) => `${e.peer} until ${e.until}`).join(', ')})`)

  // cheap on purpose: finding servers (DHT, probes) is generate's job, and its failure falls through
  const check = async (name: string): Promise<ProviderRefusal | null> => {
    try {
      await loadManifest(options.dataDir, name)
    } catch {
      return { reason: `no stored model "${name}" on this node (the mesh client runs its first and last layers)`, unknownModel: true }
    }
    return null
  }

  /** Whether admitted servers, connected or named by the DHT, cover a stored model's middle now. */
  const offered = async (name: string, signal: AbortSignal): Promise<boolean> => {
    const { admitted } = admit(await discover(name, signal, options.listDiscoveryMs ?? 2_000))
    if (admitted.length === 0) return false
    const manifest = await loadManifest(options.dataDir, name)
    const probe = await probeServers(libp2p, admitted, manifest, { rounds: 1, replyMs: options.listProbeMs ?? 3_000, dialMs: options.listProbeMs ?? 3_000, signal })
    try {
      planRoute(probe.servers, { layers: manifest.spec.numLayers, headLayers, tailLayers })
      return true
    } catch {
      // the servers found do not cover this model's middle: not offered over the mesh
      return false
    }
  }

  /** One listing of every stored model, all looked up at once under one deadline. */
  const listNow = async (): Promise<ProviderModel[]> => {
    const deadline = AbortSignal.timeout(options.listTimeoutMs ?? 8_000)
    const names = (await listModels(options.dataDir)).map((m) => m.name)
    const found = await Promise.all(names.map(async (name) => {
      try {
        return await offered(name, deadline)
      } catch (err) {
        logger.debug({ model: name, err: errorMessage(err) }, 'cannot tell whether the mesh serves a model; not listed')
        return false
      }
    }))
    return names.filter((_, i) => found[i]).map((name) => ({ id: name, ...base }))
  }

  // the listing in use, shared by concurrent callers and reused for listCacheMs
  let listing: { at: number, models: Promise<ProviderModel[]> } | null = null

  const listed = async (signal?: AbortSignal): Promise<ProviderModel[]> => {
    signal?.throwIfAborted()
    if (listing === null || Date.now() - listing.at >= listCacheMs) {
      const models = listNow()
      const entry = { at: Date.now(), models }
      listing = entry
      models.catch(() => { if (listing === entry) listing = null })
    }
    const pending = listing.models
    if (signal === undefined) return await pending
    // the shared listing keeps its own deadline; this caller stops waiting when it goes away
    return await new Promise<ProviderModel[]>((resolve, reject) => {
      const onAbort = (): void => { reject(new PermagentError('ERR_ABORTED', 'listing the mesh models was aborted', { cause: signal.reason })) }
      signal.addEventListener('abort', onAbort, { once: true })
      pending.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
    })
  }

  /** The route report: the planned chain, replacements, hand-offs and, with verification on, what it found. */
  const report = (chain: Array<{ start: number, end: number, peers: PeerId[] }>, result: MeshGenerateResult, excluded: ExcludedPeer[]): RouteReport => ({
    ...base,
    hops: chain.map((hop) => ({ start: hop.start, end: hop.end, peer: hop.peers[0].toString() })),
    failovers: result.failovers,
    handoffs: result.handoffs ?? [],
    ...(result.push !== undefined ? { push: result.push } : {}),
    ...(excluded.length > 0 ? { excluded } : {}),
    ...(result.verification !== undefined ? { faults: result.faults ?? result.verification.faults, verification: result.verification } : {})
  })

  return {
    id,
    kind: 'mesh',
    privacy: admission.privacy,
    check,
    models: listed,
    async generate (request: ProviderRequest, signal?: AbortSignal): Promise<ProviderResult> {
      const split = request.split ?? {}
      const verification = requestVerification(verifyDefaults, split.verify)
      const { admitted, refused, excluded } = admit(await discover(request.model, signal, options.discoveryMs ?? 10_000))
      if (admitted.length === 0) {
        throw new SplitInferenceError(INFER_ERRORS.noRoute, `no peer, connected or announced on the DHT, may serve layers of ${request.model}${refusedNote(refused, excluded)}; connect to peers that run \`permagent serve MODEL --layers A-B\``)
      }
      let opened
      try {
        opened = await openRoutedModel({
          ...options.routing,
          libp2p,
          dataDir: options.dataDir,
          name: request.model,
          headLayers: split.headLayers ?? headLayers,
          tailLayers: split.tailLayers ?? tailLayers,
          quantization: split.quantization ?? options.quantization ?? options.routing?.quantization,
          timeouts: options.timeouts ?? options.routing?.timeouts,
          threads: options.threads ?? options.routing?.threads,
          verify: verification !== null ? { ...options.routing?.verify, ...verification } : undefined,
          push: split.push ?? options.routing?.push,
          peers: admitted,
          signal,
          logger
        })
      } catch (err) {
        if (err instanceof SplitInferenceError && err.code === INFER_ERRORS.noRoute) {
          throw new SplitInferenceError(INFER_ERRORS.noRoute, `${errorMessage(err)}${refusedNote(refused, excluded)}`, { cause: err })
        }
        throw err
      }
      const { model, route } = opened
      logger.debug({ model: request.model, hops: route.chain.map((h) => `${h.start}-${h.end}@${h.peers[0]?.toString() ?? ''}`), verify: verification }, 'mesh route planned')
      try {
        const result = await model.generate(engineRequest(request, signal))
        for (const fault of result.faults ?? []) faulty.record(fault)
        return engineResult(result, report(route.chain, result, excluded))
      } finally {
        await model.close()
      }
    },
    async close () {}
  }
}
