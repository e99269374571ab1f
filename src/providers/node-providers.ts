import type { PeerId } from '@libp2p/interface'
import type { MeshNode } from '../mesh/index.ts'
import type { Logger } from '../util/index.ts'
import { createPeerAdmission, type TeamMembership } from './admission.ts'
import { createLocalProvider } from './local.ts'
import { createMeshProvider } from './mesh.ts'
import { createRemoteProvider } from './remote.ts'
import { createProviderResolver, type ProviderResolver } from './resolver.ts'
import { REMOTE_API_KEY_ENV, type ProviderSettings } from './settings.ts'

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
  return createProviderResolver({
    defaultPolicy: settings.policy,
    defaultTeam: settings.team,
    logger,
    local: createLocalProvider({ dataDir: node.dataDir, maxModelBytes: settings.localMaxModelBytes, logger }),
    mesh: (team) => createMeshProvider({
      libp2p: node.mesh.libp2p,
      dataDir: node.dataDir,
      admission: createPeerAdmission({ nodeGater: node.mesh.gater, team: team !== undefined ? { id: team, membership: node.team } : undefined }),
      candidates: options.candidates,
      headLayers: settings.mesh?.headLayers,
      tailLayers: settings.mesh?.tailLayers,
      quantization: settings.mesh?.activations,
      logger
    }),
    remote: remoteSettings != null
      ? createRemoteProvider({ baseUrl: remoteSettings.baseUrl, apiKey, models: remoteSettings.models, timeoutMs: remoteSettings.timeoutMs, maxResponseBytes: remoteSettings.maxResponseBytes, logger })
      : undefined
  })
}
