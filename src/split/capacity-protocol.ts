import type { Libp2p, PeerId } from '@libp2p/interface'
import { sendRequest, type MessageCodec, type ProtocolSpec } from '../mesh/index.ts'
import { CapacityRequest } from '../pb/capacity.ts'
import { InvalidInputError } from '../util/index.ts'
import { MAX_SIGNED_CAPACITY_BYTES, verifyCapacityRecord, type CapacityInfo, type ModelIdentity } from './capacity.ts'
import { hexToBytes } from './protocol.ts'

/** Asks a layer server for its signed capacity record of one model (docs/split-inference.md). */
export const CAPACITY_PROTOCOL = '/permagent/infer/capacity/1.0.0'

/** The response body is the signed record's bytes as signed, so they can be kept and re-checked. */
const rawBytes: MessageCodec<Uint8Array> = {
  encode: (bytes) => bytes,
  decode: (bytes) => bytes.subarray()
}

export const capacityProtocol: ProtocolSpec<CapacityRequest, Uint8Array> = {
  protocol: CAPACITY_PROTOCOL,
  request: CapacityRequest,
  response: rawBytes,
  maxRequestBytes: 128,
  maxResponseBytes: MAX_SIGNED_CAPACITY_BYTES,
  timeouts: { dialMs: 5_000, firstByteMs: 5_000, totalMs: 10_000 }
}

const HEX64 = /^[0-9a-f]{64}$/

export function capacityRequestFor (model: ModelIdentity): CapacityRequest {
  if (!HEX64.test(model.configSha256) || !HEX64.test(model.weightsSha256)) throw new InvalidInputError('a model identity is two sha256 hashes in hex')
  return {
    configSha256: hexToBytes(model.configSha256) as Uint8Array<ArrayBuffer>,
    weightsSha256: hexToBytes(model.weightsSha256) as Uint8Array<ArrayBuffer>
  }
}

/**
 * Fetches and verifies a peer's capacity record for a model: the signature by the peer's key,
 * the peer and model it names, and its validity period. Throws a RequestError when the peer does
 * not answer (or replies ERR_NOT_SERVING / ERR_PEER_REFUSED), a CapacityRecordError when the
 * record does not verify. A withdrawn record is returned (check `withdrawn`).
 */
export async function fetchCapacityRecord (libp2p: Libp2p, peer: PeerId, model: ModelIdentity, options: { signal?: AbortSignal, timeoutMs?: number, now?: () => number } = {}): Promise<{ info: CapacityInfo, bytes: Uint8Array }> {
  const timeouts = options.timeoutMs != null ? { dialMs: options.timeoutMs, firstByteMs: options.timeoutMs, totalMs: options.timeoutMs } : undefined
  const bytes = await sendRequest(libp2p, peer, capacityProtocol, capacityRequestFor(model), { signal: options.signal, timeouts })
  return { info: verifyCapacityRecord(bytes, { peer, model, now: options.now?.() }), bytes }
}
