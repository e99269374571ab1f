import { KvCacheMismatchError } from './errors.ts'

/**
 * A plain copy of a stage's cache: for each layer in [layerStart, layerEnd), keys and values as
 * f32 [numKvHeads, length, headDim] (row-major). Position i of every layer holds token i.
 */
export interface KvCacheSnapshot {
  layerStart: number
  layerEnd: number
  numKvHeads: number
  headDim: number
  length: number
  keys: Float32Array[]
  values: Float32Array[]
}

export interface KvCacheShape {
  layerStart: number
  layerEnd: number
  numKvHeads: number
  headDim: number
}

/**
 * The KV cache of one stage of one session. The stage reads it as past_key/past_value and
 * replaces it with present_key/present_value after each run; callers may export it, import a
 * snapshot (e.g. after migration), or truncate it (to roll back unverified steps).
 */
export class KvCache {
  readonly layerStart: number
  readonly layerEnd: number
  readonly numKvHeads: number
  readonly headDim: number
  private keyData: Float32Array[]
  private valueData: Float32Array[]
  private positions = 0

  constructor (shape: KvCacheShape) {
    this.layerStart = shape.layerStart
    this.layerEnd = shape.layerEnd
    this.numKvHeads = shape.numKvHeads
    this.headDim = shape.headDim
    this.keyData = Array.from({ length: this.layers }, () => new Float32Array(0))
    this.valueData = Array.from({ length: this.layers }, () => new Float32Array(0))
  }

  get layers (): number {
    return this.layerEnd - this.layerStart
  }

  /** Number of positions cached. */
  get length (): number {
    return this.positions
  }

  /** Bytes held (keys and values). */
  get bytes (): number {
    return this.layers * 2 * this.numKvHeads * this.positions * this.headDim * 4
  }

  /** The live arrays of a layer (absolute index); valid until the next update. */
  layer (index: number): { keys: Float32Array, values: Float32Array } {
    const i = this.indexOf(index)
    return { keys: this.keyData[i], values: this.valueData[i] }
  }

  /** Replaces every layer at once (the stage runtime's write path). */
  update (length: number, keys: Float32Array[], values: Float32Array[]): void {
    const per = this.numKvHeads * length * this.headDim
    if (keys.length !== this.layers || values.length !== this.layers || keys.some((k) => k.length !== per) || values.some((v) => v.length !== per)) {
      throw new KvCacheMismatchError(`cache update does not match ${this.layers} layers x [${this.numKvHeads}, ${length}, ${this.headDim}]`)
    }
    this.keyData = keys
    this.valueData = values
    this.positions = length
  }

  export (): KvCacheSnapshot {
    return {
      layerStart: this.layerStart,
      layerEnd: this.layerEnd,
      numKvHeads: this.numKvHeads,
      headDim: this.headDim,
      length: this.positions,
      keys: this.keyData.map((k) => k.slice()),
      values: this.valueData.map((v) => v.slice())
    }
  }

  /** Replaces the contents with a snapshot of the same layers and head layout. */
  import (snapshot: KvCacheSnapshot): void {
    if (snapshot.layerStart !== this.layerStart || snapshot.layerEnd !== this.layerEnd) {
      throw new KvCacheMismatchError(`snapshot covers layers ${snapshot.layerStart}-${snapshot.layerEnd}, this cache ${this.layerStart}-${this.layerEnd}`)
    }
    if (snapshot.numKvHeads !== this.numKvHeads || snapshot.headDim !== this.headDim) {
      throw new KvCacheMismatchError(`snapshot has ${snapshot.numKvHeads} kv heads of ${snapshot.headDim}, this cache ${this.numKvHeads} of ${this.headDim}`)
    }
    if (!Number.isInteger(snapshot.length) || snapshot.length < 0) throw new KvCacheMismatchError('snapshot length is invalid')
    this.update(snapshot.length, snapshot.keys.map((k) => k.slice()), snapshot.values.map((v) => v.slice()))
  }

  /** Keeps the first `length` positions. */
  truncate (length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.positions) throw new RangeError(`cannot truncate a cache of ${this.positions} to ${length}`)
    if (length === this.positions) return
    const cut = (data: Float32Array): Float32Array => {
      const out = new Float32Array(this.numKvHeads * length * this.headDim)
      for (let h = 0; h < this.numKvHeads; h++) {
        const from = h * this.positions * this.headDim
        out.set(data.subarray(from, from + length * this.headDim), h * length * this.headDim)
      }
      return out
    }
    this.update(length, this.keyData.map(cut), this.valueData.map(cut))
  }

  clear (): void {
    this.truncate(0)
  }

  private indexOf (layer: number): number {
    if (!Number.isInteger(layer) || layer < this.layerStart || layer >= this.layerEnd) throw new RangeError(`layer ${layer} is not in this cache (${this.layerStart}-${this.layerEnd})`)
    return layer - this.layerStart
  }
}
