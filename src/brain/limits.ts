export interface BrainLimits {
  /** Bytes of UTF-8 content per memory (default 64 KiB). */
  contentBytes: number
  keyBytes: number
  topicBytes: number
  kindBytes: number
  tags: number
  tagBytes: number
  queryBytes: number
  maxRecallLimit: number
  entityNameBytes: number
  aliases: number
  maxHops: number
  /** Records per transaction when importing or ingesting in bulk. */
  importBatchSize: number
  /** Bytes of one import line (content plus the record around it). */
  importLineBytes: number
  /** Most entities returned by neighbors(). */
  maxNeighbors: number
  /** Most paths returned by path(). */
  maxPaths: number
}

export const DEFAULT_LIMITS: BrainLimits = {
  contentBytes: 64 * 1024,
  keyBytes: 256,
  topicBytes: 128,
  kindBytes: 64,
  tags: 32,
  tagBytes: 64,
  queryBytes: 4096,
  maxRecallLimit: 1000,
  entityNameBytes: 256,
  aliases: 64,
  maxHops: 6,
  importBatchSize: 1000,
  importLineBytes: 64 * 1024 + 8192,
  maxNeighbors: 1000,
  maxPaths: 20
}

export function resolveLimits (overrides: Partial<BrainLimits> | undefined): BrainLimits {
  const limits = { ...DEFAULT_LIMITS, ...overrides }
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value <= 0) throw new RangeError(`brain limit ${name} must be a positive integer, got ${String(value)}`)
  }
  if (overrides?.contentBytes != null && overrides.importLineBytes == null) limits.importLineBytes = limits.contentBytes + 8192
  return limits
}
