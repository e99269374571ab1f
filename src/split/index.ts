export { createLayerServer, type LayerServer, type LayerServerOptions, type LayerServerLimits, type LayerServerStats } from './server.ts'
export { MeshModel, type MeshModelOptions, type MeshHop, type MeshTimeouts, type MeshGenerateResult, type Failover } from './client.ts'
export { SplitInferenceError, INFER_ERRORS } from './errors.ts'
export { INFER_PROTOCOL, maxInferMessageBytes, requestKind, responseKind } from './protocol.ts'
