export {
  INFERENCE_POLICIES, PRIVACY_CLASSES,
  type InferenceProvider, type InferencePolicy, type PrivacyClass, type ProviderKind, type ProviderModel, type ProviderRefusal,
  type ProviderRequest, type ProviderResult, type ProviderTokenEvent, type RouteHop, type RouteReport, type SplitRequestOptions, type SplitVerifyRequest
} from './types.ts'
export { ProviderError, NoProviderError, RemoteProviderError, PROVIDER_ERRORS } from './errors.ts'
export { allowedPrivacy, policyAllows, policyFor, parsePolicy, parseTeamId } from './policy.ts'
export { createLocalProvider, defaultLocalModelBytes, type LocalProviderOptions } from './local.ts'
export { createPeerAdmission, admittedLibp2p, type PeerAdmission, type TeamMembership } from './admission.ts'
export { createMeshProvider, type MeshProviderOptions } from './mesh.ts'
export { createRemoteProvider, parseBaseUrl, type RemoteProviderOptions } from './remote.ts'
export { SseParser } from './sse.ts'
export { createProviderResolver, parseModelId, type ProviderResolver, type ProviderResolverOptions, type ResolvedRequest } from './resolver.ts'
export { providerSettingsSchema, REMOTE_API_KEY_ENV, type ProviderSettings } from './settings.ts'
export { createNodeProviders, type NodeProvidersOptions } from './node-providers.ts'
export { createCurrentResolver, type CurrentResolver, type CurrentResolverOptions } from './current-resolver.ts'
export { requestVerification, asksVerification, DEFAULT_CANARIES, MAX_CANARIES, type VerifyDefaults } from './split-options.ts'
export { createFaultyPeers, type FaultyPeers, type ExcludedPeer } from './faulty-peers.ts'
