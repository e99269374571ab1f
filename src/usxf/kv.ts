import type { KvCache, KvCacheSnapshot } from '../inference/index.ts'
import type { ModelManifest, ModelSpec } from '../model/index.ts'
import type { UsxfStateInput } from './encoder.ts'
import { UsxfContextExceededError, UsxfFormatError, UsxfModelMismatchError, UsxfShapeMismatchError } from './errors.ts'
import type { ModelIdentity, RopeSpec, UsxfHeaderInfo } from './format.ts'

export interface LayerRange {
  layerStart: number
  layerEnd: number
}

export function modelIdentity (manifest: Pick<ModelManifest, 'configSha256' | 'weightsSha256'>): ModelIdentity {
  return { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }
}

export function ropeSpec (spec: Pick<ModelSpec, 'ropeTheta' | 'ropeScaling'>): RopeSpec {
  return { theta: spec.ropeTheta, scaling: spec.ropeScaling }
}

export function sameIdentity (a: ModelIdentity, b: ModelIdentity): boolean {
  return a.configSha256 === b.configSha256 && a.weightsSha256 === b.weightsSha256
}

/** The layers covered by a list of stage caches, which must be contiguous and in order. */
export function cachesRange (caches: readonly KvCache[]): LayerRange {
  if (caches.length === 0) throw new UsxfFormatError('no caches')
  for (let i = 1; i < caches.length; i++) {
    if (caches[i].layerStart !== caches[i - 1].layerEnd) throw new UsxfFormatError('caches must cover contiguous layers in order')
  }
  return { layerStart: caches[0].layerStart, layerEnd: caches[caches.length - 1].layerEnd }
}

/**
 * A zero-copy snapshot of layers [layerStart, layerEnd) of a session's stage caches. The arrays are
 * the caches' own; the runtime replaces (never mutates) them when it advances, so the snapshot
 * stays valid and unchanged while the session runs on.
 */
export function extractKv (caches: readonly KvCache[], range: LayerRange = cachesRange(caches)): KvCacheSnapshot {
  const covering = caches.filter((c) => c.layerEnd > range.layerStart && c.layerStart < range.layerEnd)
  const full = cachesRange(covering.length > 0 ? covering : caches)
  if (range.layerStart < full.layerStart || range.layerEnd > full.layerEnd || range.layerEnd <= range.layerStart) {
    throw new UsxfFormatError(`layers ${range.layerStart}-${range.layerEnd} are not held by these caches (${full.layerStart}-${full.layerEnd})`)
  }
  const length = covering[0].length
  if (covering.some((c) => c.length !== length)) throw new UsxfFormatError('the caches hold different numbers of positions')
  const keys: Float32Array[] = []
  const values: Float32Array[] = []
  for (let l = range.layerStart; l < range.layerEnd; l++) {
    const cache = covering.find((c) => l >= c.layerStart && l < c.layerEnd) as KvCache
    const layer = cache.layer(l)
    keys.push(layer.keys)
    values.push(layer.values)
  }
  return { layerStart: range.layerStart, layerEnd: range.layerEnd, numKvHeads: covering[0].numKvHeads, headDim: covering[0].headDim, length, keys, values }
}

/** The canonical USXF planes of a snapshot (views, no copy): per layer, K heads then V heads. */
export function kvPlanes (snapshot: KvCacheSnapshot): Float32Array[] {
  const { numKvHeads, headDim, length } = snapshot
  const per = length * headDim
  const planes: Float32Array[] = []
  for (let i = 0; i < snapshot.keys.length; i++) {
    for (const tensor of [snapshot.keys[i], snapshot.values[i]]) {
      if (tensor.length !== numKvHeads * per) throw new UsxfFormatError(`a layer holds ${tensor.length} values, expected ${numKvHeads} x ${length} x ${headDim}`)
      for (let h = 0; h < numKvHeads; h++) planes.push(tensor.subarray(h * per, (h + 1) * per))
    }
  }
  return planes
}

/**
 * What the encoder needs to send a snapshot of this model's cache: all its positions, or those from
 * `positionStart` on (an incremental checkpoint; still zero-copy, rows are contiguous per plane).
 * `tokenIds` are the ids of the positions sent, only when the session's policy allows sharing.
 */
export function kvStateInput (manifest: Pick<ModelManifest, 'spec' | 'configSha256' | 'weightsSha256'>, snapshot: KvCacheSnapshot, options: { tokenIds?: readonly number[] | null, positionStart?: number } = {}): UsxfStateInput {
  const spec = manifest.spec
  if (snapshot.numKvHeads !== spec.numKvHeads || snapshot.headDim !== spec.headDim) throw new UsxfFormatError('the snapshot does not match the model\'s head layout')
  const from = options.positionStart ?? 0
  if (!Number.isInteger(from) || from < 0 || from > snapshot.length) throw new UsxfFormatError(`position ${from} is outside the snapshot (0-${snapshot.length})`)
  const planes = kvPlanes(snapshot).map((plane) => plane.subarray(from * snapshot.headDim))
  return {
    kind: 'kv',
    model: modelIdentity(manifest),
    architecture: spec.architecture,
    numLayers: spec.numLayers,
    layerStart: snapshot.layerStart,
    layerEnd: snapshot.layerEnd,
    numHeads: spec.numHeads,
    numKvHeads: spec.numKvHeads,
    headDim: spec.headDim,
    hiddenSize: spec.hiddenSize,
    rope: ropeSpec(spec),
    positionStart: from,
    seqLen: snapshot.length - from,
    tokenIds: options.tokenIds != null ? [...options.tokenIds] : null,
    dtype: 'f32',
    planes
  }
}

/**
 * Refuses a header that does not fit a model and context: another model (ERR_USXF_MODEL_MISMATCH),
 * other layers, heads, sizes or rope (ERR_USXF_SHAPE_MISMATCH), or more positions than the context
 * holds (ERR_USXF_CONTEXT_EXCEEDED).
 */
export function checkStateFits (header: UsxfHeaderInfo, manifest: Pick<ModelManifest, 'spec' | 'configSha256' | 'weightsSha256'>, maxContext: number): void {
  const mine = modelIdentity(manifest)
  if (!sameIdentity(header.model, mine)) {
    throw new UsxfModelMismatchError(`the state is for model config ${header.model.configSha256.slice(0, 12)}… weights ${header.model.weightsSha256.slice(0, 12)}…; this model is ${mine.configSha256.slice(0, 12)}… ${mine.weightsSha256.slice(0, 12)}…`)
  }
  const spec = manifest.spec
  const differences: string[] = []
  const compare = (what: string, theirs: unknown, ours: unknown): void => { if (theirs !== ours) differences.push(`${what} ${String(theirs)} != ${String(ours)}`) }
  compare('architecture', header.architecture, spec.architecture)
  compare('layers', header.numLayers, spec.numLayers)
  compare('query heads', header.numHeads, spec.numHeads)
  compare('kv heads', header.numKvHeads, spec.numKvHeads)
  compare('head dim', header.headDim, spec.headDim)
  compare('hidden size', header.hiddenSize, spec.hiddenSize)
  compare('rope theta', header.rope.theta, spec.ropeTheta)
  compare('rope scaling', JSON.stringify(header.rope.scaling), JSON.stringify(spec.ropeScaling))
  if (header.kind !== 'kv') differences.push(`kind ${header.kind} is not a kv cache`)
  if (differences.length > 0) throw new UsxfShapeMismatchError(`the state does not fit this model: ${differences.join(', ')}`)
  if (header.positionStart + header.seqLen > maxContext) throw new UsxfContextExceededError(header.positionStart + header.seqLen, maxContext)
}

/** Fresh f32 arrays for a kv header, with the planes the decoder writes into (views of them). */
export function allocateKv (header: UsxfHeaderInfo): { snapshot: KvCacheSnapshot, planes: Float32Array[] } {
  if (header.kind !== 'kv') throw new UsxfFormatError('not a kv state')
  const size = header.numKvHeads * header.seqLen * header.headDim
  const layers = header.layerEnd - header.layerStart
  const snapshot: KvCacheSnapshot = {
    layerStart: header.layerStart,
    layerEnd: header.layerEnd,
    numKvHeads: header.numKvHeads,
    headDim: header.headDim,
    length: header.seqLen,
    keys: Array.from({ length: layers }, () => new Float32Array(size)),
    values: Array.from({ length: layers }, () => new Float32Array(size))
  }
  return { snapshot, planes: kvPlanes(snapshot) }
}

/**
 * Attaches a snapshot to stage caches that together cover exactly its layers: into empty caches
 * (positionStart 0), or appended after what they hold (positionStart = their length, an
 * incremental checkpoint). Everything is checked before any cache changes: all or nothing.
 */
export function attachKv (caches: readonly KvCache[], snapshot: KvCacheSnapshot, positionStart = 0): void {
  const range = cachesRange(caches)
  if (range.layerStart !== snapshot.layerStart || range.layerEnd !== snapshot.layerEnd) {
    throw new UsxfShapeMismatchError(`the state carries layers ${snapshot.layerStart}-${snapshot.layerEnd}; the caches hold ${range.layerStart}-${range.layerEnd}`)
  }
  for (const cache of caches) {
    if (cache.numKvHeads !== snapshot.numKvHeads || cache.headDim !== snapshot.headDim) throw new UsxfShapeMismatchError('the caches have another head layout')
    if (cache.length !== positionStart) throw new UsxfShapeMismatchError(`the state starts at position ${positionStart}; a cache holds ${cache.length} positions`)
  }
  const { numKvHeads, headDim } = snapshot
  const total = positionStart + snapshot.length
  const join = (old: Float32Array, added: Float32Array): Float32Array => {
    if (positionStart === 0) return added
    const out = new Float32Array(numKvHeads * total * headDim)
    for (let h = 0; h < numKvHeads; h++) {
      out.set(old.subarray(h * positionStart * headDim, (h + 1) * positionStart * headDim), h * total * headDim)
      out.set(added.subarray(h * snapshot.length * headDim, (h + 1) * snapshot.length * headDim), (h * total + positionStart) * headDim)
    }
    return out
  }
  const updates = caches.map((cache) => {
    const keys: Float32Array[] = []
    const values: Float32Array[] = []
    for (let l = cache.layerStart; l < cache.layerEnd; l++) {
      const i = l - snapshot.layerStart
      const current = cache.layer(l)
      keys.push(join(current.keys, snapshot.keys[i]))
      values.push(join(current.values, snapshot.values[i]))
    }
    return { cache, keys, values }
  })
  for (const { cache, keys, values } of updates) cache.update(total, keys, values)
}
