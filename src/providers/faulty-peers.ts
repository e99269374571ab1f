import type { Fault } from '../split/index.ts'

/** A layer server a verified request caught answering wrongly, and what it was caught on. */
export interface ExcludedPeer {
  peer: string
  /** The span it answered wrongly for. */
  start: number
  end: number
  /** How it was caught (a checked step, a canary, or while verifying another server). */
  kind: Fault['kind']
  /** Its difference over the allowance when caught (> 1). */
  ratio: number
  /** When it was caught (ISO time); it is excluded until `until`. */
  at: string
  until: string
}

/**
 * Servers caught answering wrongly, remembered across requests: a MeshModel excludes a liar for
 * its own lifetime, but the mesh provider opens one per request, so without this list the next
 * request (verified or not) could be served by the same liar. Bounded: entries expire after
 * `ttlMs` (a server may have been fixed) and the oldest go first beyond `max`.
 */
export interface FaultyPeers {
  record: (fault: Fault) => void
  /** Why the peer is excluded now, or null. */
  excluded: (peer: string) => ExcludedPeer | null
}

export function createFaultyPeers (options: { ttlMs?: number, max?: number, now?: () => number } = {}): FaultyPeers {
  const ttlMs = options.ttlMs ?? 3_600_000
  const max = options.max ?? 1024
  const now = options.now ?? Date.now
  const entries = new Map<string, ExcludedPeer & { untilMs: number }>()
  return {
    record (fault) {
      const at = now()
      entries.delete(fault.peer)
      entries.set(fault.peer, { peer: fault.peer, start: fault.start, end: fault.end, kind: fault.kind, ratio: fault.ratio, at: new Date(at).toISOString(), until: new Date(at + ttlMs).toISOString(), untilMs: at + ttlMs })
      while (entries.size > max) entries.delete(entries.keys().next().value as string)
    },
    excluded (peer) {
      const entry = entries.get(peer)
      if (entry === undefined) return null
      if (entry.untilMs <= now()) {
        entries.delete(peer)
        return null
      }
      const { untilMs: _untilMs, ...excluded } = entry
      return excluded
    }
  }
}
