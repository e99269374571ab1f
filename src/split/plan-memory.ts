import { quantizedSizes, requiredTensors, spanWeightBytes, type ModelManifest, type ModelSpec, type Quantization, type WeightDtype } from '../model/index.ts'

/**
 * Memory figures of layer spans, shared by capacity records, `--layers auto` and `model plan`.
 * The KV cache is f32 (src/inference/kv-cache.ts): per layer and position, keys and values of
 * numKvHeads x headDim floats.
 */
export function kvBytesPerPosition (spec: Pick<ModelSpec, 'numKvHeads' | 'headDim'>, layers: number): number {
  return layers * 2 * spec.numKvHeads * spec.headDim * 4
}

/** Bytes of each layer's stored weights (index = layer), read from the manifest: exact. */
export function layerWeightBytes (manifest: ModelManifest): number[] {
  return Array.from({ length: manifest.spec.numLayers }, (_, l) => spanWeightBytes(manifest, { start: l, end: l + 1, embed: false, lmHead: false }))
}

/** What the client of a split run holds besides its head and tail layers: embeddings, final norm, LM head. */
export function clientExtraBytes (manifest: ModelManifest): number {
  return spanWeightBytes(manifest, { start: 0, end: 0, embed: true, lmHead: true })
}

export interface StorageFormat {
  dtype: WeightDtype
  quant: Quantization
  /** Quantization block (default 32, as `model import`). */
  blockSize?: number
  /** Bits of a quantized LM head (default 8, as `model import`). */
  lmHeadBits?: 4 | 8
}

/**
 * The same figures computed from a model's shape alone, as `model import` would store it
 * (src/model/store.ts): matrices at dtype or block-quantized (data, f32 scales, zero points),
 * norms and biases f32, embeddings at dtype. Matches a real import byte for byte.
 */
export function specWeightBytes (spec: ModelSpec, format: StorageFormat): { layers: number[], embed: number, head: number } {
  const blockSize = format.blockSize ?? 32
  const dtypeBytes = format.dtype === 'f16' ? 2 : 4
  const bits = format.quant === 'int8' ? 8 : format.quant === 'int4' ? 4 : null
  const matrix = (n: number, k: number, matrixBits: 4 | 8 | null): number => {
    if (matrixBits === null) return n * k * dtypeBytes
    const q = quantizedSizes(n, k, matrixBits, blockSize)
    return q.data + q.scales + q.zeros
  }
  const layers = new Array<number>(spec.numLayers).fill(0)
  let embed = 0
  let head = 0
  for (const { name, shape } of requiredTensors(spec)) {
    const layer = /^model\.layers\.(\d+)\./.exec(name)
    const bytes = shape.length === 1 ? shape[0] * 4 : name === 'model.embed_tokens.weight' ? shape[0] * shape[1] * dtypeBytes : matrix(shape[0], shape[1], name === 'lm_head.weight' && bits === 4 ? (format.lmHeadBits ?? 8) : bits)
    if (layer !== null) layers[Number(layer[1])] += bytes
    else if (name === 'model.embed_tokens.weight') embed += bytes
    else head += bytes
  }
  // a tied model stores a quantized copy of the embeddings as its LM head when quantized
  if (spec.tieWordEmbeddings && bits !== null) head += matrix(spec.vocabSize, spec.hiddenSize, bits === 4 ? (format.lmHeadBits ?? 8) : 8)
  return { layers, embed, head }
}
