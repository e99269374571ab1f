import { open, readFile, type FileHandle } from 'node:fs/promises'
import { join, basename } from 'node:path'
import { pathExists } from './files.ts'
import { CheckpointError } from './errors.ts'
import { CHECKPOINT_DTYPE_BYTES, decodeToF32, type CheckpointDtype } from './dtype.ts'

/** Largest safetensors JSON header we parse (real headers are well under 1 MB). */
export const MAX_HEADER_BYTES = 64 * 1024 * 1024
const MAX_SHARDS = 4096
const MAX_INDEX_BYTES = 64 * 1024 * 1024

export interface CheckpointTensor {
  name: string
  /** Absolute path of the file holding it. */
  file: string
  dtype: CheckpointDtype
  shape: number[]
  /** Absolute byte offset in the file. */
  offset: number
  byteLength: number
}

export interface Checkpoint {
  dir: string
  files: string[]
  tensors: Map<string, CheckpointTensor>
  /** Reads rows [rowStart, rowStart + rowCount) of a tensor (first dimension), decoded to f32. */
  readRows: (name: string, rowStart: number, rowCount: number) => Promise<Float32Array>
  /** Reads a whole tensor decoded to f32. */
  read: (name: string) => Promise<Float32Array>
  close: () => Promise<void>
}

function isDtype (value: unknown): value is CheckpointDtype {
  return value === 'F32' || value === 'F16' || value === 'BF16'
}

/**
 * Parses and validates one safetensors file's header: every tensor's byte range must lie inside
 * the file, match dtype x shape, and the ranges must tile the data section without gaps or
 * overlaps (a torn or hand-edited file fails here rather than producing garbage weights).
 */
export async function readSafetensorsHeader (file: string): Promise<CheckpointTensor[]> {
  let handle: FileHandle
  try {
    handle = await open(file, 'r')
  } catch (err) {
    throw new CheckpointError('ERR_CHECKPOINT_MISSING', `checkpoint file ${basename(file)} cannot be opened: ${(err as Error).message}`, { cause: err })
  }
  try {
    const size = (await handle.stat()).size
    const name = basename(file)
    if (size < 8) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${name} is ${size} bytes, shorter than a safetensors header`)
    const prefix = Buffer.alloc(8)
    await handle.read(prefix, 0, 8, 0)
    const headerLength = prefix.readBigUInt64LE(0)
    if (headerLength > BigInt(MAX_HEADER_BYTES)) throw new CheckpointError('ERR_CHECKPOINT_HEADER', `${name}: header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`)
    const headerBytes = Number(headerLength)
    if (8 + headerBytes > size) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${name}: file is ${size} bytes but its header claims ${headerBytes} bytes`)
    const headerBuffer = Buffer.alloc(headerBytes)
    await handle.read(headerBuffer, 0, headerBytes, 8)
    let header: Record<string, unknown>
    try {
      header = JSON.parse(headerBuffer.toString('utf8'))
    } catch (err) {
      throw new CheckpointError('ERR_CHECKPOINT_HEADER', `${name}: header is not JSON`, { cause: err })
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new CheckpointError('ERR_CHECKPOINT_HEADER', `${name}: header is not a JSON object`)
    const dataStart = 8 + headerBytes
    const tensors: CheckpointTensor[] = []
    for (const [tensorName, raw] of Object.entries(header)) {
      if (tensorName === '__metadata__') continue
      const entry = raw as { dtype?: unknown, shape?: unknown, data_offsets?: unknown }
      if (entry === null || typeof entry !== 'object') throw new CheckpointError('ERR_CHECKPOINT_HEADER', `${name}: entry ${tensorName} is not an object`)
      if (!isDtype(entry.dtype)) {
        throw new CheckpointError('ERR_CHECKPOINT_DTYPE', `${name}: tensor ${tensorName} has dtype ${JSON.stringify(entry.dtype)}; only F32, F16 and BF16 are supported`)
      }
      if (!Array.isArray(entry.shape) || !entry.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || entry.shape.length > 8) {
        throw new CheckpointError('ERR_CHECKPOINT_HEADER', `${name}: tensor ${tensorName} has an invalid shape`)
      }
      const offsets = entry.data_offsets
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[1] < offsets[0]) {
        throw new CheckpointError('ERR_CHECKPOINT_OFFSETS', `${name}: tensor ${tensorName} has invalid data_offsets`)
      }
      const shape = entry.shape as number[]
      const expected = shape.reduce((a, b) => a * b, 1) * CHECKPOINT_DTYPE_BYTES[entry.dtype]
      const byteLength = offsets[1] - offsets[0]
      if (byteLength !== expected) {
        throw new CheckpointError('ERR_CHECKPOINT_OFFSETS', `${name}: tensor ${tensorName} spans ${byteLength} bytes but ${entry.dtype}[${shape.join(', ')}] needs ${expected}`)
      }
      tensors.push({ name: tensorName, file, dtype: entry.dtype, shape, offset: dataStart + offsets[0], byteLength })
    }
    const sorted = [...tensors].sort((a, b) => a.offset - b.offset)
    let cursor = dataStart
    for (const tensor of sorted) {
      if (tensor.offset !== cursor) {
        throw new CheckpointError('ERR_CHECKPOINT_OFFSETS', `${name}: tensor ${tensor.name} starts at data offset ${tensor.offset - dataStart}, expected ${cursor - dataStart} (overlap or gap)`)
      }
      cursor += tensor.byteLength
    }
    if (cursor > size) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${name} is truncated: ${size} bytes, its tensors need ${cursor}`)
    if (cursor < size) throw new CheckpointError('ERR_CHECKPOINT_OFFSETS', `${name} has ${size - cursor} bytes after its last tensor`)
    return tensors
  } finally {
    await handle.close()
  }
}

/**
 * Opens a Hugging Face checkpoint directory: model.safetensors, or shards listed by
 * model.safetensors.index.json. Validates every header up front; reads tensors lazily.
 */
export async function openCheckpoint (dir: string): Promise<Checkpoint> {
  const indexPath = join(dir, 'model.safetensors.index.json')
  const single = join(dir, 'model.safetensors')
  let files: string[]
  let weightMap: Record<string, string> | undefined
  let declaredTotal: number | undefined
  if (await pathExists(indexPath)) {
    const text = await readFile(indexPath, 'utf8')
    if (text.length > MAX_INDEX_BYTES) throw new CheckpointError('ERR_CHECKPOINT_HEADER', 'model.safetensors.index.json is too large')
    let index: { weight_map?: unknown, metadata?: { total_size?: unknown } }
    try {
      index = JSON.parse(text)
    } catch (err) {
      throw new CheckpointError('ERR_CHECKPOINT_HEADER', 'model.safetensors.index.json is not JSON', { cause: err })
    }
    const map = index.weight_map
    if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new CheckpointError('ERR_CHECKPOINT_HEADER', 'model.safetensors.index.json has no weight_map object')
    weightMap = {}
    for (const [tensor, shard] of Object.entries(map)) {
      if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) {
        throw new CheckpointError('ERR_CHECKPOINT_HEADER', `weight_map entry for ${tensor} is not a plain file name`)
      }
      weightMap[tensor] = shard
    }
    files = [...new Set(Object.values(weightMap))].sort()
    if (files.length > MAX_SHARDS) throw new CheckpointError('ERR_CHECKPOINT_HEADER', `too many shards (${files.length})`)
    const total = index.metadata?.total_size
    if (typeof total === 'number' && Number.isSafeInteger(total)) declaredTotal = total
    for (const file of files) {
      if (!(await pathExists(join(dir, file)))) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `shard ${file} listed in model.safetensors.index.json is missing`)
    }
  } else if (await pathExists(single)) {
    files = ['model.safetensors']
  } else {
    throw new CheckpointError('ERR_CHECKPOINT_MISSING', `${dir} has neither model.safetensors nor model.safetensors.index.json`)
  }
  const tensors = new Map<string, CheckpointTensor>()
  let totalBytes = 0
  for (const file of files) {
    for (const tensor of await readSafetensorsHeader(join(dir, file))) {
      if (tensors.has(tensor.name)) throw new CheckpointError('ERR_CHECKPOINT_HEADER', `tensor ${tensor.name} appears in more than one shard`)
      if (weightMap !== undefined && weightMap[tensor.name] !== file) {
        throw new CheckpointError('ERR_CHECKPOINT_HEADER', `tensor ${tensor.name} is in ${file} but the index places it in ${weightMap[tensor.name] ?? 'no shard'}`)
      }
      tensors.set(tensor.name, tensor)
      totalBytes += tensor.byteLength
    }
  }
  if (weightMap !== undefined) {
    for (const [tensor, shard] of Object.entries(weightMap)) {
      if (!tensors.has(tensor)) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${tensor} is listed in the index but absent from ${shard}`)
    }
    if (declaredTotal !== undefined && declaredTotal !== totalBytes) {
      throw new CheckpointError('ERR_CHECKPOINT_OFFSETS', `the index declares total_size ${declaredTotal} but the shards hold ${totalBytes} bytes of tensors`)
    }
  }
  const handles = new Map<string, FileHandle>()
  async function handleFor (file: string): Promise<FileHandle> {
    let handle = handles.get(file)
    if (handle === undefined) {
      handle = await open(file, 'r')
      handles.set(file, handle)
    }
    return handle
  }
  async function readRows (name: string, rowStart: number, rowCount: number): Promise<Float32Array> {
    const tensor = tensors.get(name)
    if (tensor === undefined) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${name} is not in the checkpoint`)
    const rows = tensor.shape.length === 0 ? 1 : tensor.shape[0]
    if (rowStart < 0 || rowCount < 0 || rowStart + rowCount > rows) throw new RangeError(`rows ${rowStart}+${rowCount} outside ${name} (${rows} rows)`)
    const rowBytes = rows === 0 ? 0 : tensor.byteLength / rows
    const bytes = Buffer.allocUnsafe(rowCount * rowBytes)
    const handle = await handleFor(tensor.file)
    let done = 0
    while (done < bytes.length) {
      const { bytesRead } = await handle.read(bytes, done, bytes.length - done, tensor.offset + rowStart * rowBytes + done)
      if (bytesRead === 0) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${basename(tensor.file)} ended while reading ${name}`)
      done += bytesRead
    }
    return decodeToF32(tensor.dtype, bytes)
  }
  return {
    dir,
    files: files.map((f) => join(dir, f)),
    tensors,
    readRows,
    read: async (name) => {
      const tensor = tensors.get(name)
      if (tensor === undefined) throw new CheckpointError('ERR_CHECKPOINT_MISSING', `tensor ${name} is not in the checkpoint`)
      return await readRows(name, 0, tensor.shape.length === 0 ? 1 : tensor.shape[0])
    },
    close: async () => {
      for (const handle of handles.values()) await handle.close()
      handles.clear()
    }
  }
}


export interface SafetensorsEntry {
  name: string
  dtype: CheckpointDtype
  shape: number[]
}

/** Header bytes (length prefix + JSON, padded to 8) and the data offset of each entry, for streamed writing. */
export function safetensorsHeader (entries: SafetensorsEntry[], metadata: Record<string, string> = {}): { bytes: Uint8Array, offsets: number[], dataBytes: number } {
  const header: Record<string, unknown> = { __metadata__: metadata }
  const offsets: number[] = []
  let cursor = 0
  for (const entry of entries) {
    const length = entry.shape.reduce((a, b) => a * b, 1) * CHECKPOINT_DTYPE_BYTES[entry.dtype]
    header[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [cursor, cursor + length] }
    offsets.push(cursor)
    cursor += length
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const jsonBytes = Buffer.from(json, 'utf8')
  const bytes = Buffer.alloc(8 + jsonBytes.length)
  bytes.writeBigUInt64LE(BigInt(jsonBytes.length), 0)
  jsonBytes.copy(bytes, 8)
  return { bytes, offsets, dataBytes: cursor }
}
