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
// the larger modules, by name (their APIs share some names, e.g. error classes)
export * as brain from './brain/index.ts'
export * as team from './team/index.ts'
export * as skills from './skills/index.ts'
export * as model from './model/index.ts'
export * as inference from './inference/index.ts'
export * as usxf from './usxf/index.ts'
export * as split from './split/index.ts'
export * as providers from './providers/index.ts'
