import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { pathExists } from './files.ts'
import { InvalidInputError, writeFileAtomic } from '../util/index.ts'
import { parseModelConfig, requiredTensors, type ModelSpec } from './config.ts'
import { CheckpointError, ModelConfigError, ModelExistsError, ModelNotFoundError, ModelStoreCorruptError } from './errors.ts'
import { f32ToF16 } from './dtype.ts'
import { MANIFEST_FILE, MANIFEST_FORMAT, manifestSchema, type ModelManifest, type Quantization, type StoredFile, type StoredTensor, type WeightDtype } from './manifest.ts'
import { quantizeRows, type QuantBits } from './quantize.ts'
import { openCheckpoint, type Checkpoint } from './safetensors.ts'
import { buildStageGraph } from './stage-graph.ts'
import { extractChatTemplate, MAX_TOKENIZER_BYTES, TextTokenizer } from './tokenizer.ts'
import { bytesOf, WeightFileWriter } from './weight-writer.ts'

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
/** Rows of a matrix converted at a time: bounds the memory of an import regardless of model size. */
const CHUNK_ELEMENTS = 8 * 1024 * 1024
const MAX_CONFIG_BYTES = 1024 * 1024

export interface ImportProgress {
  /** Bytes of checkpoint tensors converted so far, of `totalBytes`. */
  doneBytes: number
  totalBytes: number
  tensor: string
}

export interface ImportOptions {
  /** Checkpoint directory in Hugging Face layout. */
  source: string
  name: string
  dtype?: WeightDtype
  quant?: Quantization
  /** Values per quantization block along K (default 32). */
  blockSize?: number
  /** Bits of the LM head when quantized (default 8: keeps int4 models' top-1 close to f32). */
  lmHeadBits?: QuantBits
  onProgress?: (progress: ImportProgress) => void
  signal?: AbortSignal
}

export interface ModelSummary {
  name: string
  architecture: string
  layers: number
  hiddenSize: number
  vocabSize: number
  dtype: WeightDtype
  quant: Quantization
  bytes: number
  createdAt: string
}

export function modelsDir (dataDir: string): string {
  return join(dataDir, 'models')
}

export function validateModelName (name: string): string {
  if (!NAME_PATTERN.test(name)) throw new InvalidInputError(`model name "${name}" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`)
  return name
}

/**
 * Imports a checkpoint into the store: validates config, every shard header and every tensor's
 * shape before writing; converts tensor by tensor (bounded memory) into per-layer weight files
 * in a temporary directory, then renames it into place, so a failed import leaves nothing.
 */
export async function importModel (dataDir: string, options: ImportOptions): Promise<ModelManifest> {
  const name = validateModelName(options.name)
  const dtype = options.dtype ?? 'f32'
  const quant = options.quant ?? 'none'
  const blockSize = options.blockSize ?? 32
  if (!['f32', 'f16'].includes(dtype)) throw new InvalidInputError(`dtype must be f32 or f16, not ${dtype}`)
  if (!['none', 'int8', 'int4'].includes(quant)) throw new InvalidInputError(`quant must be int8 or int4, not ${quant}`)
  if (![16, 32, 64, 128].includes(blockSize)) throw new InvalidInputError('blockSize must be 16, 32, 64 or 128')
  const root = modelsDir(dataDir)
  const target = join(root, name)
  if (await pathExists(target)) throw new ModelExistsError(name)

  const configText = await readLimited(join(options.source, 'config.json'), MAX_CONFIG_BYTES, () => new ModelConfigError(`${options.source} has no readable config.json`))
  const spec = parseModelConfig(configText)
  await mergeGenerationConfig(options.source, spec)
  const checkpoint = await openCheckpoint(options.source)
  try {
    const required = requiredTensors(spec)
    let totalBytes = 0
    for (const { name: tensorName, shape } of required) {
      const tensor = checkpoint.tensors.get(tensorName)
      if (tensor === undefined) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${tensorName} is missing from the checkpoint`)
      if (tensor.shape.length !== shape.length || tensor.shape.some((dim, i) => dim !== shape[i])) {
        throw new CheckpointError('ERR_CHECKPOINT_SHAPE', `tensor ${tensorName} has shape [${tensor.shape.join(', ')}], the config implies [${shape.join(', ')}]`)
      }
      totalBytes += tensor.byteLength
    }
    checkDtypesAgree(checkpoint, required.map((r) => r.name))
    const tokenizer = await readTokenizer(options.source)

    await mkdir(root, { recursive: true })
    const temp = join(root, `.import-${name}-${randomBytes(6).toString('hex')}`)
    await mkdir(temp)
    try {
      const manifest = await convert(checkpoint, spec, temp, { name, dtype, quant, blockSize, lmHeadBits: options.lmHeadBits ?? 8, totalBytes, configText, tokenizer, onProgress: options.onProgress, signal: options.signal })
      if (await pathExists(target)) throw new ModelExistsError(name)
      await rename(temp, target)
      return manifest
    } catch (err) {
      await rm(temp, { recursive: true, force: true })
      throw err
    }
  } finally {
    await checkpoint.close()
  }
}

/** Mixed float widths across weight matrices mean a botched conversion; refuse them. */
function checkDtypesAgree (checkpoint: Checkpoint, names: string[]): void {
  let first: { name: string, dtype: string } | null = null
  for (const name of names) {
    const tensor = checkpoint.tensors.get(name)
    if (tensor === undefined || tensor.shape.length !== 2) continue
    if (first === null) first = { name, dtype: tensor.dtype }
    else if (tensor.dtype !== first.dtype) {
      throw new CheckpointError('ERR_CHECKPOINT_DTYPE', `tensor ${name} is ${tensor.dtype} but ${first.name} is ${first.dtype}; weight matrices must share one dtype`)
    }
  }
}

async function mergeGenerationConfig (dir: string, spec: ModelSpec): Promise<void> {
  let text: string
  try {
    text = await readLimited(join(dir, 'generation_config.json'), MAX_CONFIG_BYTES, () => new Error('absent'))
  } catch {
    return
  }
  let json: { eos_token_id?: unknown }
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ModelConfigError('generation_config.json is not valid JSON', { cause: err })
  }
  const eos = json.eos_token_id
  const ids = typeof eos === 'number' ? [eos] : Array.isArray(eos) ? eos : []
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) throw new ModelConfigError(`generation_config.json: eos_token_id ${String(id)} is outside the vocabulary`)
    if (!spec.eosTokenIds.includes(id)) spec.eosTokenIds.push(id)
  }
}

interface TokenizerFiles {
  json: string
  config: string | null
  chatTemplate: string | null
}

async function readTokenizer (dir: string): Promise<TokenizerFiles | null> {
  let json: string
  try {
    json = await readLimited(join(dir, 'tokenizer.json'), MAX_TOKENIZER_BYTES, () => new Error('absent'))
  } catch {
    return null
  }
  let config: string | null = null
  let configJson: Record<string, unknown> = {}
  try {
    config = await readLimited(join(dir, 'tokenizer_config.json'), MAX_TOKENIZER_BYTES, () => new Error('absent'))
  } catch {}
  if (config !== null) {
    try {
      configJson = JSON.parse(config)
    } catch (err) {
      throw new ModelConfigError('tokenizer_config.json is not valid JSON', { cause: err })
    }
  }
  let jinja: string | null = null
  try {
    jinja = await readLimited(join(dir, 'chat_template.jinja'), MAX_CONFIG_BYTES, () => new Error('absent'))
  } catch {}
  const chatTemplate = extractChatTemplate(configJson, jinja)
  // Refuse a tokenizer or template that does not load now rather than at the first prompt.
  new TextTokenizer(json, configJson, chatTemplate)
  return { json, config, chatTemplate }
}

interface ConvertContext {
  name: string
  dtype: WeightDtype
  quant: Quantization
  blockSize: number
  lmHeadBits: QuantBits
  totalBytes: number
  configText: string
  tokenizer: TokenizerFiles | null
  onProgress?: (progress: ImportProgress) => void
  signal?: AbortSignal
}

async function convert (checkpoint: Checkpoint, spec: ModelSpec, dir: string, ctx: ConvertContext): Promise<ModelManifest> {
  const tensors: Record<string, StoredTensor> = {}
  const files: Record<string, StoredFile> = {}
  let doneBytes = 0
  const progress = (tensorName: string, bytes: number): void => {
    doneBytes += bytes
    ctx.onProgress?.({ doneBytes, totalBytes: ctx.totalBytes, tensor: tensorName })
  }
  const quantBits: QuantBits | null = ctx.quant === 'int8' ? 8 : ctx.quant === 'int4' ? 4 : null

  /** Small 1-D tensors (norms, biases) stay f32: they cost nothing and keep precision. */
  const vector = async (writer: WeightFileWriter, stored: string, source: string): Promise<void> => {
    const values = await checkpoint.read(source)
    tensors[stored] = await writer.tensor('f32', [values.length], bytesOf(values))
    progress(source, checkpoint.tensors.get(source)?.byteLength ?? 0)
  }
  /** A [rows, cols] matrix in dtype, streamed in row chunks. */
  const dense = async (writer: WeightFileWriter, stored: string, source: string, countProgress = true): Promise<void> => {
    const info = checkpoint.tensors.get(source)
    if (info === undefined) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${source} is missing`)
    const [rows, cols] = info.shape
    const step = Math.max(1, Math.floor(CHUNK_ELEMENTS / cols))
    const offset = await writer.begin()
    for (let r = 0; r < rows; r += step) {
      ctx.signal?.throwIfAborted()
      const count = Math.min(step, rows - r)
      const values = await checkpoint.readRows(source, r, count)
      await writer.write(ctx.dtype === 'f16' ? bytesOf(f32ToF16(values)) : bytesOf(values))
      if (countProgress) progress(source, (info.byteLength * count) / rows)
    }
    tensors[stored] = { file: writer.name, offset, length: rows * cols * (ctx.dtype === 'f16' ? 2 : 4), dtype: ctx.dtype, shape: [rows, cols] }
  }
  /** A matrix quantized for MatMulNBits (data streamed; scales and zero points follow it). */
  const quantized = async (writer: WeightFileWriter, stored: string, source: string, bits: QuantBits, countProgress = true): Promise<void> => {
    const info = checkpoint.tensors.get(source)
    if (info === undefined) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${source} is missing`)
    const [n, k] = info.shape
    const step = Math.max(1, Math.floor(CHUNK_ELEMENTS / k))
    const blocks = Math.ceil(k / ctx.blockSize)
    const scales: Float32Array[] = []
    const zeros: Uint8Array[] = []
    const offset = await writer.begin()
    let dataBytes = 0
    for (let r = 0; r < n; r += step) {
      ctx.signal?.throwIfAborted()
      const count = Math.min(step, n - r)
      const q = quantizeRows(await checkpoint.readRows(source, r, count), count, k, bits, ctx.blockSize)
      await writer.write(q.data)
      dataBytes += q.data.byteLength
      scales.push(q.scales)
      zeros.push(q.zeros)
      if (countProgress) progress(source, (info.byteLength * count) / n)
    }
    const quant = { bits, blockSize: ctx.blockSize, n, k }
    tensors[stored] = { file: writer.name, offset, length: dataBytes, dtype: 'u8', shape: [n, blocks, (ctx.blockSize * bits) / 8], quant }
    const allScales = concatFloat(scales)
    tensors[`${stored}.scales`] = await writer.tensor('f32', [allScales.length], bytesOf(allScales))
    const allZeros = concatBytes(zeros)
    tensors[`${stored}.zeros`] = await writer.tensor('u8', [allZeros.length], allZeros)
  }
  const matrix = async (writer: WeightFileWriter, stored: string, source: string): Promise<void> => {
    if (quantBits === null) await dense(writer, stored, source)
    else await quantized(writer, stored, source, quantBits)
  }
  const withFile = async (fileName: string, body: (writer: WeightFileWriter) => Promise<void>): Promise<void> => {
    const writer = await WeightFileWriter.create(dir, fileName)
    try {
      await body(writer)
    } catch (err) {
      await writer.abort()
      throw err
    }
    files[fileName] = await writer.finish()
  }

  await withFile('embed.bin', async (w) => { await dense(w, 'embed', 'model.embed_tokens.weight') })
  for (let l = 0; l < spec.numLayers; l++) {
    const src = `model.layers.${l}.`
    const dst = `layers.${l}.`
    await withFile(`layer-${String(l).padStart(3, '0')}.bin`, async (w) => {
      await vector(w, `${dst}attn_norm`, `${src}input_layernorm.weight`)
      for (const proj of ['q', 'k', 'v', 'o']) {
        await matrix(w, `${dst}${proj}`, `${src}self_attn.${proj}_proj.weight`)
        const hasBias = proj === 'o' ? spec.oBias : spec.qkvBias
        if (hasBias) await vector(w, `${dst}${proj}_bias`, `${src}self_attn.${proj}_proj.bias`)
      }
      await vector(w, `${dst}mlp_norm`, `${src}post_attention_layernorm.weight`)
      for (const proj of ['gate', 'up', 'down']) await matrix(w, `${dst}${proj}`, `${src}mlp.${proj}_proj.weight`)
    })
  }
  await withFile('final.bin', async (w) => {
    await vector(w, 'final_norm', 'model.norm.weight')
    const source = spec.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'
    if (quantBits !== null) await quantized(w, 'lm_head', source, ctx.quant === 'int4' ? ctx.lmHeadBits : 8, !spec.tieWordEmbeddings)
    else if (!spec.tieWordEmbeddings) await dense(w, 'lm_head', source)
  })

  await writeFile(join(dir, 'config.json'), ctx.configText)
  if (ctx.tokenizer !== null) {
    await writeFile(join(dir, 'tokenizer.json'), ctx.tokenizer.json)
    if (ctx.tokenizer.config !== null) await writeFile(join(dir, 'tokenizer_config.json'), ctx.tokenizer.config)
  }
  const weightsSha256 = createHash('sha256').update(Object.entries(files).sort(([a], [b]) => a < b ? -1 : 1).map(([f, s]) => `${f}:${s.sha256}\n`).join('')).digest('hex')
  const manifest: ModelManifest = {
    format: MANIFEST_FORMAT,
    name: ctx.name,
    createdAt: new Date().toISOString(),
    spec,
    dtype: ctx.dtype,
    quant: ctx.quant,
    quantBlockSize: ctx.blockSize,
    lmHeadBits: quantBits === null ? null : ctx.quant === 'int4' ? ctx.lmHeadBits : 8,
    tensors,
    files,
    configSha256: createHash('sha256').update(ctx.configText).digest('hex'),
    weightsSha256,
    tokenizer: ctx.tokenizer !== null,
    chatTemplate: ctx.tokenizer?.chatTemplate ?? null,
    graph: 'model.onnx'
  }
  const graph = buildStageGraph(manifest, { start: 0, end: spec.numLayers, embed: true, lmHead: true }, { maxContext: Math.min(spec.maxPositions, 4096) })
  await writeFile(join(dir, manifest.graph), graph)
  manifest.files[manifest.graph] = { bytes: graph.byteLength, sha256: createHash('sha256').update(graph).digest('hex') }
  await writeFileAtomic(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 1))
  return manifest
}

/** The manifest of a stored model (validated). */
export async function loadManifest (dataDir: string, name: string): Promise<ModelManifest> {
  validateModelName(name)
  let text: string
  try {
    text = await readFile(join(modelsDir(dataDir), name, MANIFEST_FILE), 'utf8')
  } catch {
    throw new ModelNotFoundError(name)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new ModelStoreCorruptError(`the manifest of ${name} is not JSON`)
  }
  const parsed = manifestSchema.safeParse(json)
  if (!parsed.success) throw new ModelStoreCorruptError(`the manifest of ${name} is invalid: ${parsed.error.issues[0]?.message ?? ''}`)
  return parsed.data as ModelManifest
}

export function modelDir (dataDir: string, name: string): string {
  return join(modelsDir(dataDir), validateModelName(name))
}

export async function listModels (dataDir: string): Promise<ModelSummary[]> {
  let entries: string[]
  try {
    entries = await readdir(modelsDir(dataDir))
  } catch {
    return []
  }
  const out: ModelSummary[] = []
  for (const entry of entries.sort()) {
    if (entry.startsWith('.') || !NAME_PATTERN.test(entry)) continue
    let manifest: ModelManifest
    try {
      manifest = await loadManifest(dataDir, entry)
    } catch {
      continue
    }
    out.push(summarize(manifest))
  }
  return out
}

export function summarize (manifest: ModelManifest): ModelSummary {
  return {
    name: manifest.name,
    architecture: manifest.spec.architecture,
    layers: manifest.spec.numLayers,
    hiddenSize: manifest.spec.hiddenSize,
    vocabSize: manifest.spec.vocabSize,
    dtype: manifest.dtype,
    quant: manifest.quant,
    bytes: Object.values(manifest.files).reduce((a, f) => a + f.bytes, 0),
    createdAt: manifest.createdAt
  }
}

export async function removeModel (dataDir: string, name: string): Promise<void> {
  await loadManifest(dataDir, name)
  const dir = modelDir(dataDir, name)
  // Rename first so a concurrent list never sees a half-deleted model.
  const trash = join(modelsDir(dataDir), `.rm-${name}-${randomBytes(6).toString('hex')}`)
  await rename(dir, trash)
  await rm(trash, { recursive: true, force: true })
}

/** Re-hashes every file of a stored model against its manifest. */
export async function verifyModel (dataDir: string, name: string): Promise<void> {
  const manifest = await loadManifest(dataDir, name)
  const dir = modelDir(dataDir, name)
  for (const [file, expected] of Object.entries(manifest.files)) {
    const hash = createHash('sha256')
    let bytes = 0
    try {
      for await (const chunk of createReadStream(join(dir, file))) {
        hash.update(chunk as Buffer)
        bytes += (chunk as Buffer).length
      }
    } catch {
      throw new ModelStoreCorruptError(`${name}: ${file} is missing`)
    }
    if (bytes !== expected.bytes || hash.digest('hex') !== expected.sha256) throw new ModelStoreCorruptError(`${name}: ${file} does not match its SHA-256 in the manifest`)
  }
}

/** The stored tokenizer, or null when the model was imported without one. */
export async function loadTokenizer (dataDir: string, manifest: ModelManifest): Promise<TextTokenizer | null> {
  if (!manifest.tokenizer) return null
  const dir = modelDir(dataDir, manifest.name)
  const json = await readFile(join(dir, 'tokenizer.json'), 'utf8')
  let config: Record<string, unknown> = {}
  try {
    config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'))
  } catch {}
  return new TextTokenizer(json, config, manifest.chatTemplate)
}


async function readLimited (path: string, limit: number, missing: () => Error): Promise<string> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch {
    throw missing()
  }
  if (size > limit) throw new ModelConfigError(`${path} is ${size} bytes; the limit is ${limit}`)
  return await readFile(path, 'utf8')
}

function concatFloat (parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

function concatBytes (parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}
