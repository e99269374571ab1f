/**
 * Multi-hop questions over the graph, as of a time: path(X, Y) finds the shortest relation paths
 * (edges walked in either direction) with a bidirectional breadth-first search that always grows
 * the smaller frontier; neighbors(X, hops) lists what lies within N hops.
 */
import { InvalidInputError } from '../util/index.ts'
import { timeFilter, timeParams, type TimeParams } from './asof.ts'
import type { BrainContext } from './context.ts'
import type { EntityRow, Graph } from './graph.ts'
import type { AsOf, EntityRef, NeighborsResult, PathResult, PathStep } from './types.ts'

interface Edge {
  seq: number
  id: string
  subject: number
  predicate: string
  object: number
  confidence: number
}

interface Parent {
  edge: Edge
  /** The node one step closer to this side's start. */
  previous: number
}

export interface PathOptions {
  maxHops?: number
  asOf?: AsOf
  limit?: number
}

export interface NeighborOptions {
  hops?: number
  asOf?: AsOf
  limit?: number
}

export interface Paths {
  path: (from: string | EntityRef, to: string | EntityRef, options?: PathOptions) => PathResult
  neighbors: (entity: string | EntityRef, options?: NeighborOptions) => NeighborsResult
}

export function createPaths (ctx: BrainContext, graph: Graph): Paths {
  const { db, limits } = ctx
  const edgesStmt = db.prepare<{ node: number, rt: number, vt: number | null }, Edge>(`
    SELECT r.seq, r.id, r.subject, r.predicate, r.object, r.confidence FROM relations r WHERE r.subject = @node AND ${timeFilter('r')}
    UNION ALL
    SELECT r.seq, r.id, r.subject, r.predicate, r.object, r.confidence FROM relations r WHERE r.object = @node AND r.subject <> @node AND ${timeFilter('r')}`)

  function edgeLoader (time: TimeParams): (node: number) => Edge[] {
    const cache = new Map<number, Edge[]>()
    return (node) => {
      let edges = cache.get(node)
      if (edges === undefined) {
        edges = edgesStmt.all({ node, rt: time.rt, vt: time.vt })
        cache.set(node, edges)
      }
      return edges
    }
  }

  const nameCache = new Map<number, string>()
  function nameOf (seq: number): string {
    let name = nameCache.get(seq)
    if (name === undefined) {
      name = graph.entityBySeq(seq).name
      if (nameCache.size > 100_000) nameCache.clear()
      nameCache.set(seq, name)
    }
    return name
  }

  function step (edge: Edge, from: number): PathStep {
    return {
      relation: edge.id,
      subject: nameOf(edge.subject),
      predicate: edge.predicate,
      object: nameOf(edge.object),
      direction: edge.subject === from ? 'forward' : 'backward',
      confidence: edge.confidence / 1000
    }
  }

  function checkCount (value: number | undefined, fallback: number, max: number, what: string): number {
    const n = value ?? fallback
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidInputError(`${what} must be an integer from 1 to ${max}`)
    return n
  }

  /** Every shortest walk from `start` to `node` as edge lists, following parent links. */
  function walks (parents: Map<number, Parent[]>, node: number, start: number, cap: number): Array<Array<{ edge: Edge, from: number }>> {
    if (node === start) return [[]]
    const out: Array<Array<{ edge: Edge, from: number }>> = []
    for (const parent of parents.get(node) ?? []) {
      for (const prefix of walks(parents, parent.previous, start, cap - out.length)) {
        out.push([...prefix, { edge: parent.edge, from: parent.previous }])
        if (out.length >= cap) return out
      }
    }
    return out
  }

  function path (fromRef: string | EntityRef, toRef: string | EntityRef, options: PathOptions = {}): PathResult {
    const maxHops = checkCount(options.maxHops, 3, limits.maxHops, 'maxHops')
    const limit = checkCount(options.limit, 5, limits.maxPaths, 'limit')
    const time = timeParams(options.asOf)
    const from = graph.entity(fromRef)
    const to = graph.entity(toRef)
    const result: PathResult = { from: graph.entityOf(from), to: graph.entityOf(to), paths: [] }
    if (from.seq === to.seq) return result
    const edges = edgeLoader(time)
    const sides = [
      { depth: new Map<number, number>([[from.seq, 0]]), parents: new Map<number, Parent[]>(), frontier: [from.seq], level: 0 },
      { depth: new Map<number, number>([[to.seq, 0]]), parents: new Map<number, Parent[]>(), frontier: [to.seq], level: 0 }
    ]
    let meeting: number[] = []
    while (sides[0].level + sides[1].level < maxHops && sides[0].frontier.length > 0 && sides[1].frontier.length > 0) {
      const grow = sides[0].frontier.length <= sides[1].frontier.length ? 0 : 1
      const side = sides[grow]
      const other = sides[1 - grow]
      const next: number[] = []
      for (const node of side.frontier) {
        for (const edge of edges(node)) {
          const neighbour = edge.subject === node ? edge.object : edge.subject
          const known = side.depth.get(neighbour)
          if (known === undefined) {
            side.depth.set(neighbour, side.level + 1)
            side.parents.set(neighbour, [{ edge, previous: node }])
            next.push(neighbour)
          } else if (known === side.level + 1) {
            side.parents.get(neighbour)?.push({ edge, previous: node })
          }
        }
      }
      side.level++
      side.frontier = next
      meeting = next.filter((node) => other.depth.has(node))
      if (meeting.length > 0) {
        const best = Math.min(...meeting.map((n) => (side.depth.get(n) as number) + (other.depth.get(n) as number)))
        meeting = meeting.filter((n) => (side.depth.get(n) as number) + (other.depth.get(n) as number) === best)
        break
      }
    }
    for (const node of meeting) {
      for (const head of walks(sides[0].parents, node, from.seq, limit)) {
        for (const tail of walks(sides[1].parents, node, to.seq, limit)) {
          // the backward side's walk runs to -> node: reverse it to run node -> to
          const steps = [...head.map((s) => step(s.edge, s.from)), ...tail.reverse().map((s) => step(s.edge, s.edge.subject === s.from ? s.edge.object : s.edge.subject))]
          result.paths.push({ hops: steps.length, steps })
          if (result.paths.length >= limit) return result
        }
      }
    }
    return result
  }

  function neighbors (ref: string | EntityRef, options: NeighborOptions = {}): NeighborsResult {
    const hops = checkCount(options.hops, 1, limits.maxHops, 'hops')
    const limit = checkCount(options.limit, 100, limits.maxNeighbors, 'limit')
    const time = timeParams(options.asOf)
    const start: EntityRow = graph.entity(ref)
    const edges = edgeLoader(time)
    const seen = new Set<number>([start.seq])
    const result: NeighborsResult = { entity: graph.entityOf(start), neighbors: [] }
    let frontier = [start.seq]
    for (let distance = 1; distance <= hops && frontier.length > 0; distance++) {
      const next: number[] = []
      for (const node of frontier) {
        for (const edge of edges(node)) {
          const neighbour = edge.subject === node ? edge.object : edge.subject
          if (seen.has(neighbour)) continue
          seen.add(neighbour)
          next.push(neighbour)
          result.neighbors.push({ entity: graph.entityOf(graph.entityBySeq(neighbour)), distance, via: step(edge, node) })
          if (result.neighbors.length >= limit) return result
        }
      }
      frontier = next
    }
    return result
  }

  return { path, neighbors }
}
