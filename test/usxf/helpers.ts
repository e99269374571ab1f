import { createHash } from 'node:crypto'
import { generateEd25519, identityFromKeyPair, type Identity } from '../../src/identity/index.ts'
import { f32ToBf16, f32ToF16 } from '../../src/model/index.ts'
export { maxAbsDiff } from '../model/fixtures.ts'
import { layoutOf, type UsxfDtype, type UsxfKind, type UsxfStateInput } from '../../src/usxf/index.ts'

/** The fixed key of docs/protocols.md's test vector (Ed25519 signing is deterministic). */
export const TEST_SEED = Uint8Array.from({ length: 32 }, (_, i) => i + 1)
export const TEST_PUBLIC_KEY = '79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664'

export async function testIdentity (): Promise<Identity> {
  return await identityFromKeyPair({ seed: TEST_SEED, publicKey: new Uint8Array(Buffer.from(TEST_PUBLIC_KEY, 'hex')) })
}

/** A second key, for streams signed by someone else. */
export async function otherIdentity (): Promise<Identity> {
  return await identityFromKeyPair(generateEd25519())
}

export function hexSha256 (text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** Seeded values with a spread like real KV entries (and some exact zeros and tiny ones). */
export function seededValues (count: number, seed: number): Float32Array {
  const out = new Float32Array(count)
  let state = seed >>> 0
  for (let i = 0; i < count; i++) {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296
    out[i] = i % 97 === 0 ? 0 : i % 89 === 0 ? (u - 0.5) * 1e-6 : (u - 0.5) * 8
  }
  return out
}

export interface StateShape {
  kind?: UsxfKind
  dtype?: UsxfDtype
  layers?: number
  kvHeads?: number
  headDim?: number
  hidden?: number
  seqLen?: number
  positionStart?: number
  tokenIds?: number[] | null
  seed?: number
}

/** A synthetic state input (f32 planes, or f16/bf16 bit planes made from them). */
export function syntheticState (shape: StateShape = {}): { input: UsxfStateInput, f32Planes: Float32Array[] } {
  const kind = shape.kind ?? 'kv'
  const layers = shape.layers ?? 2
  const kvHeads = shape.kvHeads ?? 2
  const headDim = shape.headDim ?? 8
  const seqLen = shape.seqLen ?? 37
  const dtype = shape.dtype ?? 'f32'
  const base = {
    kind,
    model: { configSha256: hexSha256('config'), weightsSha256: hexSha256('weights') },
    architecture: 'LlamaForCausalLM',
    numLayers: layers + 1,
    layerStart: kind === 'kv' ? 1 : 1,
    layerEnd: kind === 'kv' ? 1 + layers : 1,
    numHeads: kvHeads * 2,
    numKvHeads: kvHeads,
    headDim,
    hiddenSize: shape.hidden ?? kvHeads * 2 * headDim,
    rope: { theta: 10000, scaling: null },
    positionStart: shape.positionStart ?? 0,
    seqLen,
    tokenIds: shape.tokenIds ?? null,
    dtype
  }
  const layout = layoutOf({ ...base, blockTokens: 1 })
  const f32Planes = Array.from({ length: layout.planes }, (_, p) => seededValues(seqLen * layout.width, (shape.seed ?? 1) * 1000 + p))
  const planes = dtype === 'f32' ? f32Planes : f32Planes.map((p) => dtype === 'f16' ? f32ToF16(p) : f32ToBf16(p))
  return { input: { ...base, planes }, f32Planes }
}

export async function collect (records: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const r of records) out.push(r.slice())
  return out
}
