import type { PeerId } from '@libp2p/interface'
import { handleRequests, sendRequest, type MessageCodec, type ProtocolSpec } from '../mesh/index.ts'
import type { MeshLibp2p } from '../mesh/index.ts'
import type { Logger } from '../util/logger.ts'
import { ShardRejectedError } from './errors.ts'
import { decodeShard, MAX_SHARD_BYTES } from './shard.ts'

/**
 * A new member hands its join straight to the peers it reaches. Gossip only reaches peers whose
 * subscription we already know, and sync serves members only, so without this a join could stay
 * on the joiner's disk. Only membership shards are taken here, through the same validator.
 */
export const JOIN_PROTOCOL = '/permagent/team/join/1.0.0'

const bytesCodec: MessageCodec<Uint8Array> = {
  encode: (bytes) => bytes,
  decode: (bytes) => bytes.subarray()
}

const spec: ProtocolSpec<Uint8Array, Uint8Array> = {
  protocol: JOIN_PROTOCOL,
  request: bytesCodec,
  response: bytesCodec,
  maxRequestBytes: MAX_SHARD_BYTES,
  maxResponseBytes: 16,
  timeouts: { dialMs: 10_000, firstByteMs: 10_000, totalMs: 20_000 }
}

export async function serveJoins (libp2p: MeshLibp2p, logger: Logger, accept: (shard: Uint8Array, peer: PeerId) => { accepted: boolean, duplicate: boolean, error?: { code: string, message: string } }): Promise<void> {
  await handleRequests(libp2p, spec, async (request, context) => {
    const shard = decodeShard(request, { verify: false })
    if (shard.kind !== 'membership') throw new ShardRejectedError('ERR_SHARD_NOT_MEMBERSHIP', 'only membership shards are accepted on the join protocol')
    const result = accept(request, context.remotePeer)
    if (result.error != null) throw new ShardRejectedError(result.error.code, result.error.message)
    return new Uint8Array([result.accepted ? 1 : 0])
  }, { logger, maxInboundStreams: 16 })
}

export async function sendJoin (libp2p: MeshLibp2p, peer: PeerId, shard: Uint8Array, signal?: AbortSignal): Promise<void> {
  await sendRequest(libp2p, peer, spec, shard, { signal })
}
