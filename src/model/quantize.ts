/** Block quantization in the layout of onnxruntime's com.microsoft MatMulNBits. */
export type QuantBits = 4 | 8

export interface QuantizedRows {
  /** [rows, blocksPerRow, blockSize * bits / 8] */
  data: Uint8Array
  /** [rows * blocksPerRow] */
  scales: Float32Array
  /** 8-bit: [rows * blocksPerRow]; 4-bit: [rows * ceil(blocksPerRow / 2)], low nibble first. */
  zeros: Uint8Array
}

const CLIP_CANDIDATES: Record<QuantBits, number[]> = {
  4: [1, 0.9, 0.8, 0.7],
  8: [1, 0.97, 0.94, 0.9]
}

export function blocksPerRow (k: number, blockSize: number): number {
  return Math.ceil(k / blockSize)
}

export function quantizedSizes (n: number, k: number, bits: QuantBits, blockSize: number): { data: number, scales: number, zeros: number } {
  const blocks = blocksPerRow(k, blockSize)
  return {
    data: n * blocks * (blockSize * bits) / 8,
    scales: n * blocks * 4,
    zeros: bits === 8 ? n * blocks : n * Math.ceil(blocks / 2)
  }
}

/**
 * Asymmetric min/max quantization of rows of length k (a weight matrix in Hugging Face
 * [out, in] layout, i.e. N rows of K): w ~ (q - zero) * scale per block of blockSize values.
 */
export function quantizeRows (values: Float32Array, rows: number, k: number, bits: QuantBits, blockSize: number): QuantizedRows {
  const blocks = blocksPerRow(k, blockSize)
  const levels = (1 << bits) - 1
  const blobBytes = (blockSize * bits) / 8
  const sizes = quantizedSizes(rows, k, bits, blockSize)
  const data = new Uint8Array(sizes.data)
  const scales = new Float32Array(rows * blocks)
  const zeros = new Uint8Array(sizes.zeros)
  const zeroBytesPerRow = bits === 8 ? blocks : Math.ceil(blocks / 2)
  for (let r = 0; r < rows; r++) {
    const row = r * k
    for (let b = 0; b < blocks; b++) {
      const start = b * blockSize
      const end = Math.min(start + blockSize, k)
      // The range always includes 0 so padding (and exact zeros) quantize exactly.
      let min = 0
      let max = 0
      for (let i = start; i < end; i++) {
        const v = values[row + i]
        if (v < min) min = v
        if (v > max) max = v
      }
      // Clipping the range trades a few large errors for finer steps; keep the clip with the
      // least squared error (a data-free version of what llama.cpp's k-quants search for).
      let scale32 = 1
      let zero = 0
      let bestError = Infinity
      for (const clip of CLIP_CANDIDATES[bits]) {
        let scale = ((max - min) * clip) / levels
        if (scale === 0 || !Number.isFinite(scale)) scale = 1
        const s32 = Math.fround(scale)
        const z = Math.min(levels, Math.max(0, Math.round((-min * clip) / s32)))
        let error = 0
        for (let i = start; i < end; i++) {
          const v = values[row + i]
          const q = Math.min(levels, Math.max(0, Math.round(v / s32) + z))
          const e = (q - z) * s32 - v
          error += e * e
        }
        if (error < bestError) {
          bestError = error
          scale32 = s32
          zero = z
        }
      }
      scales[r * blocks + b] = scale32
      if (bits === 8) zeros[r * zeroBytesPerRow + b] = zero
      else zeros[r * zeroBytesPerRow + (b >> 1)] |= (b & 1) === 0 ? zero : zero << 4
      const blob = (r * blocks + b) * blobBytes
      for (let i = 0; i < blockSize; i++) {
        const v = start + i < end ? values[row + start + i] : 0
        const q = Math.min(levels, Math.max(0, Math.round(v / scale32) + zero))
        if (bits === 8) data[blob + i] = q
        else data[blob + (i >> 1)] |= (i & 1) === 0 ? q : q << 4
      }
    }
  }
  return { data, scales, zeros }
}

/** Inverse of quantizeRows, for tests and the reference path. */
export function dequantizeRows (q: QuantizedRows, rows: number, k: number, bits: QuantBits, blockSize: number): Float32Array {
  const blocks = blocksPerRow(k, blockSize)
  const blobBytes = (blockSize * bits) / 8
  const zeroBytesPerRow = bits === 8 ? blocks : Math.ceil(blocks / 2)
  const out = new Float32Array(rows * k)
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const scale = q.scales[r * blocks + b]
      const zero = bits === 8 ? q.zeros[r * zeroBytesPerRow + b] : (q.zeros[r * zeroBytesPerRow + (b >> 1)] >> ((b & 1) * 4)) & 0xf
      const blob = (r * blocks + b) * blobBytes
      for (let i = 0; i < blockSize && b * blockSize + i < k; i++) {
        const value = bits === 8 ? q.data[blob + i] : (q.data[blob + (i >> 1)] >> ((i & 1) * 4)) & 0xf
        out[r * k + b * blockSize + i] = (value - zero) * scale
      }
    }
  }
  return out
}
