import type { ModelSpec } from '../model/index.ts'
import { InvalidInputError, PermagentError } from '../util/index.ts'
import type { CapacityInfo } from './capacity.ts'
import { kvBytesPerPosition, specWeightBytes, type StorageFormat } from './plan-memory.ts'
import { planRoute, type ServerInfo } from './route.ts'

/** Half-open layer ranges [start, end). */
export interface LayerRange { start: number, end: number }

function ranges (layers: number[]): LayerRange[] {
  const out: LayerRange[] = []
  for (const l of layers) {
    const last = out[out.length - 1]
    if (last != null && last.end === l) last.end = l + 1
    else out.push({ start: l, end: l + 1 })
  }
  return out
}

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0)

// ---------------------------------------------------------------------------------------------
// A pool from a model's shape alone: "does a 70B at int4 fit four 16 GB machines?"

export interface PoolPlanOptions extends StorageFormat {
  headLayers?: number
  tailLayers?: number
  /** Sessions each server holds at once, and positions per session, for the KV budget (default 1 x 2048). */
  sessions?: number
  maxLength?: number
  /** Share of each machine's memory kept for the OS and the runtime (default 0.15). */
  reserveFraction?: number
  /**
   * 'first' (default): machine 0 is the user's, holding embeddings, head and tail layers and the
   * LM head; what memory is left there serves middle layers through a second node on it (a node
   * does not route to itself), after the other machines are full. 'separate': the user's machine
   * is not among these, and every one serves middle layers.
   */
  client?: 'first' | 'separate'
  /** Compute of one decode row per layer, ms, and round trip per hop, ms, if measured elsewhere. */
  msPerLayer?: number
  rttMs?: number
}

export interface PoolMachinePlan {
  index: number
  memoryBytes: number
  /** Memory after the reserve. */
  usableBytes: number
  /** 'client': the user's machine (it may serve middle layers too, through a second node). */
  role: 'client' | 'server'
  /** Middle layers it serves (null: none). */
  span: LayerRange | null
  weightBytes: number
  kvBytes: number
  freeBytes: number
}

export interface PoolPlan {
  layers: number
  format: Required<Pick<StorageFormat, 'dtype' | 'quant'>>
  /** Stored weights of the whole model. */
  modelBytes: number
  /** Weight bytes of one layer (all layers of these families have the same shape) and KV per position per layer. */
  layerBytes: number
  kvBytesPerLayerPosition: number
  /** What the user's machine holds: embeddings, head and tail layers, final norm and LM head, their KV. */
  clientBytes: number
  machines: PoolMachinePlan[]
  uncovered: LayerRange[]
  fits: boolean
  /** Only from the given msPerLayer and rttMs: an estimate, never a measurement. */
  projected: { msPerToken: number, tokensPerSecond: number, hops: number, estimated: true } | null
  notes: string[]
}

/**
 * Packs a model, from its shape and storage format, onto machines of given memory: the client's
 * part first, then consecutive middle layers on each server machine in order, as many as fit.
 * Byte counts are what `model import` would store (exact); the reserve and the KV budget are
 * assumptions, listed in `notes`.
 */
export function planPool (spec: ModelSpec, machines: readonly number[], options: PoolPlanOptions): PoolPlan {
  if (machines.length === 0 || machines.length > 4096 || machines.some((m) => !Number.isFinite(m) || m <= 0)) throw new InvalidInputError('give 1..4096 machines with a positive memory size each')
  const head = options.headLayers ?? 1
  const tail = options.tailLayers ?? 1
  const from = head
  const to = spec.numLayers - tail
  if (!(Number.isInteger(head) && Number.isInteger(tail) && head >= 1 && tail >= 1 && to > from)) throw new InvalidInputError(`a model of ${spec.numLayers} layers has no middle between ${from} and ${to}`)
  const sessions = options.sessions ?? 1
  const maxLength = options.maxLength ?? 2048
  const reserve = options.reserveFraction ?? 0.15
  if (!(reserve >= 0 && reserve < 1)) throw new InvalidInputError('the reserve is a fraction in [0, 1)')
  const client = options.client ?? 'first'
  if (client === 'first' && machines.length < 2) throw new InvalidInputError('with the client on machine 0, give at least two machines (or client: separate)')

  const weights = specWeightBytes(spec, options)
  const kvLayerPos = kvBytesPerPosition(spec, 1)
  const kvLayer = kvLayerPos * sessions * maxLength
  const clientLayers = [...Array.from({ length: head }, (_, i) => i), ...Array.from({ length: tail }, (_, i) => to + i)]
  const clientBytes = weights.embed + weights.head + sum(clientLayers.map((l) => weights.layers[l] + kvLayer))

  const plans: PoolMachinePlan[] = machines.map((memoryBytes, index) => {
    const usableBytes = Math.floor(memoryBytes * (1 - reserve))
    const isClient = client === 'first' && index === 0
    const held = isClient ? clientBytes : 0
    return { index, memoryBytes, usableBytes, role: isClient ? 'client' : 'server', span: null, weightBytes: held - (isClient ? kvLayer * clientLayers.length : 0), kvBytes: isClient ? kvLayer * clientLayers.length : 0, freeBytes: usableBytes - held }
  })
  // servers first, in order; the client's machine takes what is left, as a second node on it
  // (a node does not route to itself)
  let next = from
  for (const plan of [...plans.filter((p) => p.role === 'server'), ...plans.filter((p) => p.role === 'client')]) {
    const start = next
    let bytes = 0
    while (next < to && bytes + weights.layers[next] + kvLayer <= plan.freeBytes) { bytes += weights.layers[next] + kvLayer; next++ }
    if (next === start) continue
    plan.span = { start, end: next }
    plan.kvBytes += kvLayer * (next - start)
    plan.weightBytes += bytes - kvLayer * (next - start)
    plan.freeBytes -= bytes
  }
  const uncovered = next < to ? [{ start: next, end: to }] : []
  const clientFits = client === 'separate' || (plans[0]?.freeBytes ?? -1) >= 0
  const notes = [
    `KV budget: ${sessions} session(s) x ${maxLength} positions per server, f32 keys and values`,
    `${Math.round(reserve * 100)}% of each machine kept for the OS and runtime (an assumption)`,
    client === 'first' ? 'machine 0 is the client (embeddings, head and tail layers, LM head); middle layers on it are served by a second node there (a node does not route to itself)' : 'the client is not one of these machines'
  ]
  if (!clientFits) notes.push(`the client part needs ${clientBytes} bytes, more than machine 0's ${plans[0].usableBytes} usable`)
  const servers = plans.filter((p) => p.span != null)
  let projected: PoolPlan['projected'] = null
  if (options.msPerLayer != null && options.rttMs != null) {
    if (!(options.msPerLayer >= 0 && options.rttMs >= 0)) throw new InvalidInputError('msPerLayer and rttMs are >= 0')
    const msPerToken = spec.numLayers * options.msPerLayer + servers.length * options.rttMs
    projected = { msPerToken, tokensPerSecond: msPerToken > 0 ? 1000 / msPerToken : Infinity, hops: servers.length, estimated: true }
  } else {
    notes.push('no tokens/s projection: give a measured ms per layer and RTT (or run `permagent model plan MODEL` on a live pool)')
  }
  return {
    layers: spec.numLayers,
    format: { dtype: options.dtype, quant: options.quant },
    modelBytes: sum(weights.layers) + weights.embed + weights.head,
    layerBytes: weights.layers[from],
    kvBytesPerLayerPosition: kvLayerPos,
    clientBytes,
    machines: plans,
    uncovered,
    fits: uncovered.length === 0 && clientFits,
    projected,
    notes
  }
}

// ---------------------------------------------------------------------------------------------
// A live pool: the servers found on the mesh, their signed capacity records and measured RTTs.

export interface LiveModelFacts {
  numLayers: number
  /** Stored weight bytes of each layer (manifest). */
  layerBytes: readonly number[]
  kvBytesPerLayerPosition: number
  /** Embeddings, final norm and LM head: held by the client. */
  clientExtraBytes: number
}

export interface LiveServerPlan {
  peer: string
  start: number
  end: number
  /** From the manifest: weights of the span at the stored dtype, KV per position of the span. */
  weightBytes: number
  kvBytesPerPosition: number
  /** From the signed record. */
  freeMemoryBytes: number
  freeSessions: number
  maxSessions: number
  maxLength: number
  msPerLayer: number
  tokensPerSecond: number
  version: string
  teamOnly: boolean
  /** Measured now by this node (null: the probe failed). */
  rttMs: number | null
}

export interface LivePoolPlan {
  layers: number
  headLayers: number
  tailLayers: number
  servers: LiveServerPlan[]
  /** For each middle layer, the peers serving it. */
  coverage: Array<{ layer: number, peers: string[] }>
  uncovered: LayerRange[]
  /** Weights of the uncovered layers, and whether the servers' reported free memory could hold them. */
  uncoveredBytes: number
  poolFreeMemoryBytes: number
  clientBytes: number
  /** A chain through the middle exists over servers with a free session. */
  fits: boolean
  route: Array<{ start: number, end: number, peer: string }> | null
  projected: {
    /** planRoute over measured RTTs and per-layer compute. */
    middleMsPerToken: number
    /**
     * Head and tail compute here: measured on this node (embeddings, head and tail layers, LM
     * head) when `local` was given, else estimated from the servers' median ms per layer.
     */
    localMsPerToken: number
    localMeasured: boolean
    msPerToken: number
    tokensPerSecond: number
  } | null
  notes: string[]
}

/**
 * Describes a live pool: coverage, memory per span (from the manifest), uncovered layers, whether
 * a chain exists, and projected tokens/s from planRoute over the measured RTTs and the servers'
 * measured per-layer compute, plus an estimate of the local head and tail.
 */
export function describeLivePool (facts: LiveModelFacts, records: readonly CapacityInfo[], probed: readonly ServerInfo[], options: { headLayers?: number, tailLayers?: number, maxLength?: number, local?: { headMs: number, tailMs: number } } = {}): LivePoolPlan {
  const head = options.headLayers ?? 1
  const tail = options.tailLayers ?? 1
  const from = head
  const to = facts.numLayers - tail
  if (!(Number.isInteger(head) && Number.isInteger(tail) && head >= 1 && tail >= 1 && to > from)) throw new InvalidInputError(`a model of ${facts.numLayers} layers has no middle between ${from} and ${to}`)
  const rtt = new Map(probed.map((s) => [s.peer.toString(), s.rttMs]))
  const servers: LiveServerPlan[] = records.filter((r) => !r.withdrawn && r.end <= facts.numLayers).map((r) => ({
    peer: r.peer.toString(),
    start: r.start,
    end: r.end,
    weightBytes: sum(facts.layerBytes.slice(r.start, r.end)),
    kvBytesPerPosition: facts.kvBytesPerLayerPosition * (r.end - r.start),
    freeMemoryBytes: r.freeMemoryBytes,
    freeSessions: r.freeSessions,
    maxSessions: r.maxSessions,
    maxLength: r.maxLength,
    msPerLayer: r.msPerLayer,
    tokensPerSecond: r.tokensPerSecond,
    version: r.version,
    teamOnly: r.teamOnly,
    rttMs: rtt.get(r.peer.toString()) ?? null
  }))
  const coverage = Array.from({ length: to - from }, (_, i) => ({ layer: from + i, peers: servers.filter((s) => s.start <= from + i && from + i < s.end).map((s) => s.peer) }))
  const uncoveredLayers = coverage.filter((c) => c.peers.length === 0).map((c) => c.layer)
  const notes: string[] = []
  let route: LivePoolPlan['route'] = null
  let projected: LivePoolPlan['projected'] = null
  try {
    const planned = planRoute(probed, { layers: facts.numLayers, headLayers: head, tailLayers: tail, maxLength: options.maxLength ?? 512 })
    route = planned.chain.map((hop) => ({ start: hop.start, end: hop.end, peer: hop.peers[0].toString() }))
    const measured = probed.map((s) => s.msPerLayer).filter((v) => Number.isFinite(v) && v > 0).sort((a, b) => a - b)
    const median = measured.length > 0 ? measured[Math.floor(measured.length / 2)] : 0
    const localMeasured = options.local != null
    const localMsPerToken = options.local != null ? options.local.headMs + options.local.tailMs : median * (head + tail)
    const msPerToken = planned.expectedMsPerToken + localMsPerToken
    projected = { middleMsPerToken: planned.expectedMsPerToken, localMsPerToken, localMeasured, msPerToken, tokensPerSecond: msPerToken > 0 ? 1000 / msPerToken : Infinity }
    notes.push(localMeasured
      ? 'local head and tail compute (embeddings, LM head included) measured on this node; sampling is not counted'
      : 'local head and tail compute is estimated from the servers\' median ms per layer (the LM head and sampling not counted); --measure-local measures it')
  } catch (err) {
    if (!(err instanceof PermagentError)) throw err
    notes.push(`no route: ${err.message}`)
  }
  const uncoveredBytes = sum(uncoveredLayers.map((l) => facts.layerBytes[l]))
  return {
    layers: facts.numLayers,
    headLayers: head,
    tailLayers: tail,
    servers,
    coverage,
    uncovered: ranges(uncoveredLayers),
    uncoveredBytes,
    poolFreeMemoryBytes: sum(servers.map((s) => s.freeMemoryBytes)),
    clientBytes: facts.clientExtraBytes + sum([...Array.from({ length: head }, (_, i) => i), ...Array.from({ length: tail }, (_, i) => to + i)].map((l) => facts.layerBytes[l])),
    fits: route !== null,
    route,
    projected,
    notes
  }
}
