import { z } from 'zod'
import type { ModelSpec } from './config.ts'

export const MANIFEST_FORMAT = 'permagent-model/1'
export const MANIFEST_FILE = 'manifest.json'

export type WeightDtype = 'f32' | 'f16'
export type Quantization = 'none' | 'int8' | 'int4'

/** One tensor in a stored weight file (raw little-endian bytes at [offset, offset + length)). */
export interface StoredTensor {
  file: string
  offset: number
  length: number
  dtype: 'f32' | 'f16' | 'u8'
  shape: number[]
  /** Present on MatMulNBits weight blobs: the matrix is N x K, quantized along K. */
  quant?: { bits: 4 | 8, blockSize: number, n: number, k: number }
}

export interface StoredFile {
  bytes: number
  sha256: string
}

export interface ModelManifest {
  format: typeof MANIFEST_FORMAT
  name: string
  createdAt: string
  spec: ModelSpec
  dtype: WeightDtype
  quant: Quantization
  quantBlockSize: number
  /** Bits of the LM head when quantized (int4 models keep it at 8 bits, as llama.cpp's Q4 mixes do). */
  lmHeadBits: 4 | 8 | null
  tensors: Record<string, StoredTensor>
  files: Record<string, StoredFile>
  /** SHA-256 of config.json as imported. */
  configSha256: string
  /** SHA-256 over the sorted "name:sha256" lines of the weight files: the model's identity. */
  weightsSha256: string
  tokenizer: boolean
  chatTemplate: string | null
  /** The unsplit graph written at import (any other span is built on demand). */
  graph: string
}

const storedTensor = z.object({
  file: z.string().regex(/^[a-z0-9._-]+$/),
  offset: z.number().int().nonnegative(),
  length: z.number().int().nonnegative(),
  dtype: z.enum(['f32', 'f16', 'u8']),
  shape: z.array(z.number().int().nonnegative()).max(8),
  quant: z.object({ bits: z.union([z.literal(4), z.literal(8)]), blockSize: z.number().int().positive(), n: z.number().int().positive(), k: z.number().int().positive() }).optional()
})

const spec = z.object({
  family: z.enum(['llama', 'mistral', 'qwen2']),
  architecture: z.string(),
  hiddenSize: z.number().int().positive(),
  intermediateSize: z.number().int().positive(),
  numLayers: z.number().int().positive(),
  numHeads: z.number().int().positive(),
  numKvHeads: z.number().int().positive(),
  headDim: z.number().int().positive(),
  vocabSize: z.number().int().positive(),
  maxPositions: z.number().int().positive(),
  rmsNormEps: z.number().positive(),
  ropeTheta: z.number().positive(),
  ropeScaling: z.object({ type: z.enum(['llama3', 'linear']), factor: z.number(), lowFreqFactor: z.number(), highFreqFactor: z.number(), originalMaxPositions: z.number() }).nullable(),
  tieWordEmbeddings: z.boolean(),
  qkvBias: z.boolean(),
  oBias: z.boolean(),
  bosTokenId: z.number().int().nullable(),
  eosTokenIds: z.array(z.number().int())
})

export const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  name: z.string(),
  createdAt: z.string(),
  spec,
  dtype: z.enum(['f32', 'f16']),
  quant: z.enum(['none', 'int8', 'int4']),
  quantBlockSize: z.number().int().positive(),
  lmHeadBits: z.union([z.literal(4), z.literal(8)]).nullable(),
  tensors: z.record(z.string(), storedTensor),
  files: z.record(z.string(), z.object({ bytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
  configSha256: z.string(),
  weightsSha256: z.string(),
  tokenizer: z.boolean(),
  chatTemplate: z.string().nullable(),
  graph: z.string()
})

/** Bytes of weights a stage reads per token for a layer span (what bounds decode speed). */
export function weightBytes (manifest: ModelManifest, filter: (tensorName: string) => boolean = () => true): number {
  let total = 0
  for (const [name, tensor] of Object.entries(manifest.tensors)) {
    if (name === 'embed') continue // a lookup reads one row per token, not the table
    if (filter(name)) total += tensor.length
  }
  if (manifest.spec.tieWordEmbeddings && manifest.tensors.lm_head === undefined && filter('lm_head')) total += manifest.tensors.embed.length
  return total
}

/**
 * Bytes of stored weights a stage of layers [start, end) holds, with the embedding table and/or
 * the LM head (and final norm) when it has them: what a layer server needs in memory.
 */
export function spanWeightBytes (manifest: ModelManifest, span: { start: number, end: number, embed: boolean, lmHead: boolean }): number {
  let total = 0
  for (const [name, tensor] of Object.entries(manifest.tensors)) {
    const layer = layerOfTensor(name)
    if (layer !== null) {
      if (layer >= span.start && layer < span.end) total += tensor.length
    } else if (name === 'embed') {
      if (span.embed || (span.lmHead && manifest.tensors.lm_head === undefined)) total += tensor.length
    } else if (span.lmHead) {
      total += tensor.length
    }
  }
  return total
}

export function layerOfTensor (name: string): number | null {
  const match = /^layers\.(\d+)\./.exec(name)
  return match === null ? null : Number(match[1])
}
