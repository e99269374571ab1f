import { InvalidInputError, PermagentError } from '../util/index.ts'
import type { CapacityInfo } from './capacity.ts'

export interface AutoSpanInput {
  numLayers: number
  /** Layers clients keep at the start and end (default 1 each): never served. */
  headLayers?: number
  tailLayers?: number
  /** Stored weight bytes of each layer (index = layer). */
  layerBytes: readonly number[]
  /** KV bytes of one position in one layer. */
  kvBytesPerLayerPosition: number
  /** The server's session limits: its KV caches may hold maxSessions x maxLength positions. */
  maxSessions: number
  maxLength: number
  /** Memory this node gives the span (weights + KV). */
  memoryBytes: number
  /** Serve at most this many layers (default: as many as fit). */
  maxLayers?: number
  /** The pool's current servers of the model (verified capacity records; withdrawn ones left out). */
  servers: ReadonlyArray<Pick<CapacityInfo, 'start' | 'end' | 'tokensPerSecond'>>
}

export interface LayerCoverage {
  layer: number
  /** Servers whose span holds the layer. */
  servers: number
  /** Sum of their decode rates (tokens/s). */
  tokensPerSecond: number
}

export interface AutoSpanChoice {
  start: number
  end: number
  /** Bytes the span needs: its weights plus KV for maxSessions x maxLength positions. */
  memoryBytes: number
  /** Coverage of the middle layers before this server joins. */
  coverage: LayerCoverage[]
  reason: string
}

export class AutoSpanError extends PermagentError {}

/** Orders layers by how much the pool lacks them: fewer servers first, then less throughput. */
function compareCoverage (a: LayerCoverage, b: LayerCoverage): number {
  return a.servers - b.servers || a.tokensPerSecond - b.tokensPerSecond
}

/**
 * The span a new layer server should take, like Petals' block selection: as many consecutive
 * middle layers as fit `memoryBytes`, placed where the pool lacks them most. Each window's layers
 * are sorted by coverage (servers, then tokens/s) and windows compared lexicographically, so the
 * window holding the least-served layer wins, then the next least-served, and so on; ties go to
 * the earliest window. Never layer 0..headLayers-1 nor the tail layers.
 */
export function chooseAutoSpan (input: AutoSpanInput): AutoSpanChoice {
  const head = input.headLayers ?? 1
  const tail = input.tailLayers ?? 1
  const from = head
  const to = input.numLayers - tail
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || tail < 1 || to <= from) throw new InvalidInputError(`a model of ${input.numLayers} layers has no middle between ${from} and ${to} to serve`)
  if (input.layerBytes.length !== input.numLayers) throw new InvalidInputError(`layerBytes has ${input.layerBytes.length} entries for ${input.numLayers} layers`)
  for (const [name, value] of Object.entries({ memoryBytes: input.memoryBytes, kvBytesPerLayerPosition: input.kvBytesPerLayerPosition, maxSessions: input.maxSessions, maxLength: input.maxLength })) {
    if (!Number.isFinite(value) || value < 0) throw new InvalidInputError(`${name} must be a finite number >= 0`)
  }
  const kvPerLayer = input.kvBytesPerLayerPosition * input.maxSessions * input.maxLength
  const need = (l: number): number => input.layerBytes[l] + kvPerLayer

  const coverage: LayerCoverage[] = []
  for (let l = from; l < to; l++) {
    let servers = 0
    let tokensPerSecond = 0
    for (const s of input.servers) {
      if (s.start <= l && l < s.end) {
        servers++
        tokensPerSecond += Number.isFinite(s.tokensPerSecond) && s.tokensPerSecond > 0 ? s.tokensPerSecond : 0
      }
    }
    coverage.push({ layer: l, servers, tokensPerSecond })
  }

  // the longest window that fits somewhere (layers may differ in size)
  const cap = Math.min(to - from, input.maxLayers ?? Infinity)
  let length = 0
  for (let start = from; start < to; start++) {
    let bytes = 0
    let n = 0
    while (start + n < to && n < cap && bytes + need(start + n) <= input.memoryBytes) { bytes += need(start + n); n++ }
    length = Math.max(length, n)
  }
  if (length === 0) {
    const smallest = Math.min(...coverage.map((c) => need(c.layer)))
    throw new AutoSpanError('ERR_NO_MEMORY', `one layer needs ${smallest} bytes (weights + KV for ${input.maxSessions} sessions x ${input.maxLength} positions); this node gives ${input.memoryBytes}. Lower --max-sessions or free memory.`)
  }

  let best: { start: number, keys: LayerCoverage[] } | null = null
  for (let start = from; start + length <= to; start++) {
    let bytes = 0
    for (let l = start; l < start + length; l++) bytes += need(l)
    if (bytes > input.memoryBytes) continue
    const keys = coverage.slice(start - from, start - from + length).sort(compareCoverage)
    if (best === null || lexicographic(keys, best.keys) < 0) best = { start, keys }
  }
  const chosen = best as { start: number, keys: LayerCoverage[] }
  let memoryBytes = 0
  for (let l = chosen.start; l < chosen.start + length; l++) memoryBytes += need(l)
  const weakest = chosen.keys[0]
  return {
    start: chosen.start,
    end: chosen.start + length,
    memoryBytes,
    coverage,
    reason: `${length} layer${length === 1 ? '' : 's'} fit${length === 1 ? 's' : ''} in ${input.memoryBytes} bytes; layer ${weakest.layer} is served by ${weakest.servers} server${weakest.servers === 1 ? '' : 's'} (${weakest.tokensPerSecond.toFixed(1)} tokens/s), the least in the pool`
  }
}

function lexicographic (a: LayerCoverage[], b: LayerCoverage[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareCoverage(a[i], b[i])
    if (c !== 0) return c
  }
  return a.length - b.length
}
