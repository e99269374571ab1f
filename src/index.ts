/**
 * Permagent Mesh: the public library API. `createPermagent` builds a whole node; the modules'
 * own APIs are re-exported for embedding and for users' tests.
 */
export { createPermagent, KEY_FILE_NAME, type Permagent, type PermagentOptions, type NodeStatus, type NetworkOptions, type NodeService } from './permagent.ts'
export { PERMAGENT_VERSION } from './version.ts'
export * from './identity/index.ts'
export * from './mesh/index.ts'
export * from './simulation/index.ts'
export * from './util/index.ts'
export * from './client/index.ts'
