import { InvalidInputError } from '../util/errors.ts'

export type TopologyKind = 'full' | 'ring' | 'random-k' | 'star' | 'none'
export const TOPOLOGY_KINDS: readonly TopologyKind[] = ['full', 'ring', 'random-k', 'star', 'none']

/** A deterministic PRNG (mulberry32) so a seeded swarm wires the same way every run. */
export function seededRandom (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The dials that wire a topology: [from, to] index pairs, each undirected edge once.
 * - full: every pair; ring: i — i+1; star: 0 — everyone;
 * - random-k: every node dials k distinct random others (seeded), on top of a ring so the
 *   swarm is always one connected component.
 */
export function topologyEdges (kind: TopologyKind, nodes: number, options: { k?: number, seed?: number } = {}): Array<[number, number]> {
  if (!Number.isInteger(nodes) || nodes < 1) throw new InvalidInputError(`a swarm needs a whole number of nodes >= 1, got ${nodes}`)
  const edges = new Map<string, [number, number]>()
  const add = (a: number, b: number): void => {
    if (a === b) return
    const key = a < b ? `${a}-${b}` : `${b}-${a}`
    if (!edges.has(key)) edges.set(key, [a, b])
  }
  switch (kind) {
    case 'none':
      break
    case 'full':
      for (let a = 0; a < nodes; a++) for (let b = a + 1; b < nodes; b++) add(a, b)
      break
    case 'ring':
      for (let a = 0; a < nodes; a++) add(a, (a + 1) % nodes)
      break
    case 'star':
      for (let a = 1; a < nodes; a++) add(0, a)
      break
    case 'random-k': {
      const k = options.k ?? 3
      if (!Number.isInteger(k) || k < 1) throw new InvalidInputError(`random-k needs k >= 1, got ${k}`)
      const random = seededRandom(options.seed ?? 1)
      for (let a = 0; a < nodes; a++) add(a, (a + 1) % nodes)
      for (let a = 0; a < nodes; a++) {
        const wanted = Math.min(k, nodes - 1)
        const chosen = new Set<number>()
        while (chosen.size < wanted) {
          const b = Math.floor(random() * nodes)
          if (b !== a) chosen.add(b)
        }
        for (const b of chosen) add(a, b)
      }
      break
    }
    default:
      throw new InvalidInputError(`unknown topology "${String(kind)}"; choose one of ${TOPOLOGY_KINDS.join(', ')}`)
  }
  return [...edges.values()]
}
