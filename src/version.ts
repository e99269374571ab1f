/** The node's software version, reported by `status` and identify. Kept in step with package.json. */
export const PERMAGENT_VERSION = '0.1.0'
