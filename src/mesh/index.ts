export { createMeshNode, DHT_PROTOCOL, MDNS_SERVICE_TAG, MeshStartError, type MeshNode, type MeshNodeOptions, type MeshLibp2p, type MeshServices, type PeerSummary } from './node.ts'
export { createPolicyGater, type PolicyGater, type PeerRule } from './gater.ts'
export { parseMultiaddr, parsePeerMultiaddr } from './multiaddrs.ts'
export { RequestError, ProtocolReplyError, InvalidMultiaddrError } from './errors.ts'
export {
  sendRequest, handleRequests, openChannel, decodeResponseFrame, MessageChannel, DEFAULT_TIMEOUTS,
  type MessageCodec, type PhaseTimeouts, type ProtocolSpec, type RequestContext, type HandlerOptions
} from './reqresp.ts'
