import type { PeerId } from '@libp2p/interface'
import type { MeshNode } from '../mesh/index.ts'
import type { Logger } from '../util/index.ts'
import { createPeerAdmission, type TeamMembership } from './admission.ts'
import { createFaultyPeers } from './faulty-peers.ts'
import { createLocalProvider } from './local.ts'
import { createMeshProvider } from './mesh.ts'
import { createRemoteProvider } from './remote.ts'
import { createProviderResolver, type ProviderResolver } from './resolver.ts'
import { REMOTE_API_KEY_ENV, type ProviderSettings } from './settings.ts'
import type { InferenceProvider } from './types.ts'

/** Mesh providers kept (least recently used dropped first): the plain mesh and the teams asked for lately. */
const MAX_KEPT_MESH_PROVIDERS = 16

export interface NodeProvidersOptions {
  /** The node's parts the providers use (a Permagent fits). */
  node: { dataDir: string, mesh: MeshNode, team: TeamMembership, logger: Logger }
  settings?: ProviderSettings
  /** Where the remote API key may come from (PERMAGENT_REMOTE_API_KEY). */
  env?: Record<string, string | undefined>
  /** Candidate layer servers of a model (default: connected peers and the DHT's servers of the model). */
  candidates?: (model: string, signal?: AbortSignal) => Promise<PeerId[]>
}

/**
 * The resolver a node uses for its OpenAI API: local models in this process, mesh providers over
 * the node's libp2p (team-mesh admission from the node's team memberships and connection gater),
 * and the configured remote URL, if any.
 */
export function createNodeProviders (options: NodeProvidersOptions): ProviderResolver {
  const { node } = options
  const settings = options.settings ?? {}
  const logger = node.logger.child({ module: 'providers' })
  const remoteSettings = settings.remote
  const apiKey = options.env?.[REMOTE_API_KEY_ENV] ?? remoteSettings?.apiKey
  const meshProviders = new Map<string, InferenceProvider>()
  // a server caught lying under one team's request is not trusted by the others either
  const faulty = createFaultyPeers()
  return createProviderResolver({
    defaultPolicy: settings.policy,
    defaultTeam: settings.team,
    logger,
    local: createLocalProvider({ dataDir: node.dataDir, maxModelBytes: settings.localMaxModelBytes, logger }),
    mesh: (team) => {
      // kept per team, so a provider's model listing (cached a few seconds) serves later requests;
      // admission reads membership and the gater at each use, so a kept provider is never stale
      const key = team ?? ''
      let provider = meshProviders.get(key)
      if (provider === undefined) {
        provider = createMeshProvider({
          libp2p: node.mesh.libp2p,
          dataDir: node.dataDir,
          admission: createPeerAdmission({ nodeGater: node.mesh.gater, team: team !== undefined ? { id: team, membership: node.team } : undefined }),
          candidates: options.candidates,
          headLayers: settings.mesh?.headLayers,
          tailLayers: settings.mesh?.tailLayers,
          quantization: settings.mesh?.activations,
          verify: settings.mesh?.verify,
          faulty,
          logger
        })
        if (meshProviders.size >= MAX_KEPT_MESH_PROVIDERS) meshProviders.delete(meshProviders.keys().next().value as string)
      }
      meshProviders.delete(key)
      meshProviders.set(key, provider)
      return provider
    },
    remote: remoteSettings != null
      ? createRemoteProvider({ baseUrl: remoteSettings.baseUrl, apiKey, models: remoteSettings.models, timeoutMs: remoteSettings.timeoutMs, maxResponseBytes: remoteSettings.maxResponseBytes, logger })
      : undefined
  })
}
