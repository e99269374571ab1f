import { createRequire } from 'node:module'

/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every USXF record.
 * node:zlib's crc32 is CRC-32/IEEE, a different polynomial. The CRC is the codec's main-thread cost
 * (SHA-256 runs on a worker thread, see hash.ts), so large inputs go, in order of preference, to:
 * - @node-rs/crc32, a prebuilt native addon using the CPU's CRC32C instructions (SSE4.2 on x86,
 *   the ARMv8 CRC extension on Apple silicon): 4.6 GB/s measured here, reading the bytes in place;
 * - a small WebAssembly slicing-by-16 function assembled below (1.7 GB/s here, with the copy into
 *   its memory), when the addon has no build for this platform;
 * - the table-driven JavaScript loop (0.9 GB/s), for small inputs and as the reference.
 */
const POLY = 0x82f63b78
const SLICES = 16
const TABLE = buildTable()

function buildTable (): Int32Array {
  const table = new Int32Array(SLICES * 256)
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? (c >>> 1) ^ POLY : c >>> 1
    table[i] = c
  }
  for (let s = 1; s < SLICES; s++) {
    for (let i = 0; i < 256; i++) {
      const previous = table[(s - 1) * 256 + i]
      table[s * 256 + i] = (previous >>> 8) ^ table[previous & 0xff]
    }
  }
  return table
}

function updateBytes (crc: number, bytes: Uint8Array, start: number, end: number): number {
  const t = TABLE
  for (let i = start; i < end; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8)
  return crc
}

/** The JavaScript implementation (small inputs, and the reference for the WebAssembly one). */
export function crc32cJs (bytes: Uint8Array, previous = 0): number {
  let crc = ~previous
  const length = bytes.byteLength
  // Align to 4 bytes so the body can be read through an Int32Array view.
  const head = Math.min(length, (4 - (bytes.byteOffset & 3)) & 3)
  crc = updateBytes(crc, bytes, 0, head)
  const blocks = (length - head) >>> 4
  if (blocks > 0) {
    const words = new Int32Array(bytes.buffer, bytes.byteOffset + head, blocks * 4)
    const t = TABLE
    for (let i = 0; i < words.length; i += 4) {
      const a = words[i] ^ crc
      const b = words[i + 1]
      const c = words[i + 2]
      const d = words[i + 3]
      crc = t[3840 + (a & 0xff)] ^ t[3584 + ((a >>> 8) & 0xff)] ^ t[3328 + ((a >>> 16) & 0xff)] ^ t[3072 + (a >>> 24)] ^
        t[2816 + (b & 0xff)] ^ t[2560 + ((b >>> 8) & 0xff)] ^ t[2304 + ((b >>> 16) & 0xff)] ^ t[2048 + (b >>> 24)] ^
        t[1792 + (c & 0xff)] ^ t[1536 + ((c >>> 8) & 0xff)] ^ t[1280 + ((c >>> 16) & 0xff)] ^ t[1024 + (c >>> 24)] ^
        t[768 + (d & 0xff)] ^ t[512 + ((d >>> 8) & 0xff)] ^ t[256 + ((d >>> 16) & 0xff)] ^ t[d >>> 24]
    }
  }
  crc = updateBytes(crc, bytes, head + blocks * 16, length)
  return ~crc >>> 0
}

// ---- the WebAssembly version ----

/** Table at offset 0 (16 KiB), input copied to DATA_OFFSET; 2 MiB of memory in all. */
const DATA_OFFSET = SLICES * 256 * 4
const MEMORY_PAGES = 32
const WASM_MIN_BYTES = 1024

const uleb = (n: number): number[] => {
  const out: number[] = []
  do {
    let byte = n & 0x7f
    n >>>= 7
    if (n !== 0) byte |= 0x80
    out.push(byte)
  } while (n !== 0)
  return out
}

const sleb = (n: number): number[] => {
  const out: number[] = []
  for (;;) {
    const byte = n & 0x7f
    n >>= 7
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) { out.push(byte); return out }
    out.push(byte | 0x80)
  }
}

/**
 * Assembles `crc(ptr, len, crc) -> crc`: the slicing-by-16 loop over 16-byte steps, then a byte
 * loop for the tail. Table k entry i lives at k * 1024 + 4i, so each lookup is a load whose
 * constant offset selects the table: load(((word >>> 8j) & 255) << 2, offset = k * 1024).
 */
function assemble (): Uint8Array {
  const op = { get: 0x20, set: 0x21, const: 0x41, load: 0x28, load8u: 0x2d, xor: 0x73, and: 0x71, shl: 0x74, shru: 0x76, add: 0x6a, geu: 0x4f, brIf: 0x0d, br: 0x0c, block: 0x02, loop: 0x03, end: 0x0b, void: 0x40 }
  const code: number[] = []
  const get = (i: number): void => { code.push(op.get, i) }
  const set = (i: number): void => { code.push(op.set, i) }
  const k = (n: number): void => { code.push(op.const, ...sleb(n)) }
  const load = (offset: number): void => { code.push(op.load, 2, ...uleb(offset)) }
  const [PTR, LEN, CRC, END, A, B, C, D] = [0, 1, 2, 3, 4, 5, 6, 7]
  get(CRC); k(-1); code.push(op.xor); set(CRC)
  get(PTR); get(LEN); k(-16); code.push(op.and, op.add); set(END)
  code.push(op.block, op.void, op.loop, op.void)
  get(PTR); get(END); code.push(op.geu, op.brIf, 1)
  get(PTR); load(0); get(CRC); code.push(op.xor); set(A)
  get(PTR); load(4); set(B)
  get(PTR); load(8); set(C)
  get(PTR); load(12); set(D)
  let first = true
  for (const [w, word] of [A, B, C, D].entries()) {
    for (let byte = 0; byte < 4; byte++) {
      get(word)
      if (byte === 0) { k(2); code.push(op.shl) } else { k(8 * byte - 2); code.push(op.shru) }
      k(0x3fc); code.push(op.and)
      load((15 - (w * 4 + byte)) * 1024)
      if (!first) code.push(op.xor)
      first = false
    }
  }
  set(CRC)
  get(PTR); k(16); code.push(op.add); set(PTR)
  code.push(op.br, 0, op.end, op.end)
  get(PTR); get(LEN); k(15); code.push(op.and, op.add); set(END)
  code.push(op.block, op.void, op.loop, op.void)
  get(PTR); get(END); code.push(op.geu, op.brIf, 1)
  get(CRC); get(PTR); code.push(op.load8u, 0, 0, op.xor); k(255); code.push(op.and); k(2); code.push(op.shl); load(0)
  get(CRC); k(8); code.push(op.shru, op.xor); set(CRC)
  get(PTR); k(1); code.push(op.add); set(PTR)
  code.push(op.br, 0, op.end, op.end)
  get(CRC); k(-1); code.push(op.xor, op.end)
  const body = [1, 5, 0x7f, ...code] // five i32 locals
  const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes]
  const name = (s: string): number[] => [s.length, ...Array.from(s, (ch) => ch.charCodeAt(0))]
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f]), // type: (i32, i32, i32) -> i32
    ...section(3, [1, 0]), // one function of type 0
    ...section(5, [1, 0x00, ...uleb(MEMORY_PAGES)]), // memory, min pages
    ...section(7, [2, ...name('crc'), 0x00, 0, ...name('memory'), 0x02, 0]),
    ...section(10, [1, ...uleb(body.length), ...body])
  ])
}

interface WasmCrc {
  crc: (ptr: number, length: number, crc: number) => number
  memory: Uint8Array
}

// The project's TypeScript libs do not declare WebAssembly; this is the little of it used here.
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { exports: { crc: WasmCrc['crc'], memory: { buffer: ArrayBuffer } } }
}

function instantiate (): WasmCrc | null {
  const api = (globalThis as unknown as { WebAssembly?: WebAssemblyApi }).WebAssembly
  if (api === undefined) return null
  try {
    const exports = new api.Instance(new api.Module(assemble())).exports
    const memory = new Uint8Array(exports.memory.buffer)
    new Int32Array(exports.memory.buffer, 0, TABLE.length).set(TABLE)
    return { crc: exports.crc, memory }
  } catch {
    return null // no WebAssembly: the JavaScript loop serves alone
  }
}

const WASM = instantiate()

type NativeCrc = (input: Uint8Array, initial?: number) => number

function loadNative (): NativeCrc | null {
  try {
    const addon = createRequire(import.meta.url)('@node-rs/crc32') as { crc32c?: NativeCrc }
    const crc = addon.crc32c
    // the check value of the CRC-32C catalogue: a build that disagrees is not used
    if (typeof crc !== 'function' || crc(new TextEncoder().encode('123456789')) !== 0xe3069283) return null
    return crc
  } catch {
    return null // no build for this platform: WebAssembly or JavaScript serve
  }
}

const NATIVE = loadNative()
/** Below this the JavaScript loop beats the cost of a call into the addon or WebAssembly. */
const NATIVE_MIN_BYTES = 256

/** Which implementation serves large inputs here (reported by the codec benchmark). */
export const CRC32C_IMPLEMENTATION: 'native' | 'wasm' | 'js' = NATIVE !== null ? 'native' : WASM !== null ? 'wasm' : 'js'

/** CRC-32C of `bytes`; pass a previous result to continue over data that arrives in pieces. */
export function crc32c (bytes: Uint8Array, previous = 0): number {
  if (NATIVE !== null && bytes.byteLength >= NATIVE_MIN_BYTES) return NATIVE(bytes, previous) >>> 0
  return crc32cWasm(bytes, previous)
}

/** The WebAssembly implementation (the JavaScript loop for small inputs, or without WebAssembly). */
export function crc32cWasm (bytes: Uint8Array, previous = 0): number {
  if (WASM === null || bytes.byteLength < WASM_MIN_BYTES) return crc32cJs(bytes, previous)
  const capacity = WASM.memory.byteLength - DATA_OFFSET
  let crc = previous
  for (let offset = 0; offset < bytes.byteLength; offset += capacity) {
    const piece = bytes.subarray(offset, offset + capacity)
    WASM.memory.set(piece, DATA_OFFSET)
    crc = WASM.crc(DATA_OFFSET, piece.byteLength, crc) >>> 0
  }
  return crc
}
