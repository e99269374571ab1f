import { createHash, type Hash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { StoredFile, StoredTensor } from './manifest.ts'

const ALIGN = 64

/** Appends tensors to one weight file at aligned offsets, hashing as it goes. */
export class WeightFileWriter {
  readonly name: string
  private readonly handle: FileHandle
  private readonly hash: Hash = createHash('sha256')
  private position = 0

  private constructor (name: string, handle: FileHandle) {
    this.name = name
    this.handle = handle
  }

  static async create (dir: string, name: string): Promise<WeightFileWriter> {
    return new WeightFileWriter(name, await open(join(dir, name), 'wx'))
  }

  /** Starts a tensor at the next aligned offset; append its bytes with `write`, in order. */
  async begin (): Promise<number> {
    const pad = (ALIGN - (this.position % ALIGN)) % ALIGN
    if (pad > 0) await this.write(new Uint8Array(pad))
    return this.position
  }

  async write (bytes: Uint8Array): Promise<void> {
    this.hash.update(bytes)
    let done = 0
    while (done < bytes.byteLength) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.byteLength - done, this.position + done)
      done += bytesWritten
    }
    this.position += bytes.byteLength
  }

  async tensor (dtype: StoredTensor['dtype'], shape: number[], bytes: Uint8Array, quant?: StoredTensor['quant']): Promise<StoredTensor> {
    const offset = await this.begin()
    await this.write(bytes)
    return { file: this.name, offset, length: bytes.byteLength, dtype, shape, ...(quant === undefined ? {} : { quant }) }
  }

  async finish (): Promise<StoredFile> {
    await this.handle.sync()
    await this.handle.close()
    return { bytes: this.position, sha256: this.hash.digest('hex') }
  }

  async abort (): Promise<void> {
    await this.handle.close().catch(() => {})
  }
}

export function bytesOf (view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
}
