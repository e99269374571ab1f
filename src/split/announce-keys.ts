import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import type { ModelIdentity } from './capacity.ts'

/**
 * DHT keys of layer servers (docs/split-inference.md, "Discovery and capacity records"): CIDv1,
 * raw codec, whose sha2-256 multihash is taken over a domain string, the config and weights
 * hashes, and for a span its bounds. Every server of a model provides the model key (a client
 * finds all of them without knowing spans) and its span key (a client looking for one span).
 */
const RAW_CODEC = 0x55
const SHA2_256 = 0x12

function keyCid (parts: Uint8Array[]): CID {
  const hash = createHash('sha256')
  for (const part of parts) hash.update(part)
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256, new Uint8Array(hash.digest())))
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'))

export function modelServersKey (model: ModelIdentity): CID {
  return keyCid([text('permagent/infer/model/v1\u0000'), hex(model.configSha256), hex(model.weightsSha256)])
}

export function spanServersKey (model: ModelIdentity, span: { start: number, end: number }): CID {
  const bounds = new Uint8Array(8)
  const view = new DataView(bounds.buffer)
  view.setUint32(0, span.start, false)
  view.setUint32(4, span.end, false)
  return keyCid([text('permagent/infer/span/v1\u0000'), hex(model.configSha256), hex(model.weightsSha256), bounds])
}
