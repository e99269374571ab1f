import type { PeerId } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import type { MeshLibp2p } from '../mesh/index.ts'
import type { Logger } from '../util/logger.ts'

/**
 * DHT provider records for skill bundles on the private Kademlia DHT (/permagent/kad/1.0.0). The
 * key is a CIDv1 with the raw codec (0x55) whose multihash is sha2-256 (0x12) over the bundle id's
 * 32 bytes, i.e. the bundle id itself as the digest. A node holding a bundle provides it; a node
 * installing one looks up providers and fetches from them (members of the team only: the fetch
 * protocol serves members).
 */

const RAW_CODEC = 0x55
const SHA2_256 = 0x12

export function bundleCid (bundleId: string): CID {
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256, Buffer.from(bundleId, 'hex')))
}

/** Announces that this node holds the bundle; failures (no DHT peers yet) are logged, not thrown. */
export async function provideBundle (libp2p: MeshLibp2p, bundleId: string, signal: AbortSignal, logger: Logger): Promise<void> {
  try {
    await libp2p.contentRouting.provide(bundleCid(bundleId), { signal })
  } catch (err) {
    logger.debug({ bundle: bundleId, err: (err as Error).message }, 'could not provide skill bundle on the DHT')
  }
}

/**
 * Peers the DHT names as holding the bundle (never this node), at most `max`, within the signal's
 * deadline. Their addresses go to the peer store so they can be dialled.
 */
export async function findBundleProviders (libp2p: MeshLibp2p, bundleId: string, options: { signal: AbortSignal, max: number, logger: Logger }): Promise<PeerId[]> {
  const found = new Map<string, PeerId>()
  try {
    for await (const provider of libp2p.contentRouting.findProviders(bundleCid(bundleId), { signal: options.signal })) {
      if (provider.id.equals(libp2p.peerId) || found.has(provider.id.toString())) continue
      if (provider.multiaddrs.length > 0) await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
      found.set(provider.id.toString(), provider.id)
      if (found.size >= options.max) break
    }
  } catch (err) {
    // a deadline or an empty routing table ends the search; what was found is used
    options.logger.debug({ bundle: bundleId, err: (err as Error).message, found: found.size }, 'skill provider lookup ended')
  }
  return [...found.values()]
}
