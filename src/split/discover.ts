import type { Libp2p, PeerId } from '@libp2p/interface'
import { INFER_PROTOCOL } from './protocol.ts'

/**
 * Connected peers that may serve layers: those identify says speak /permagent/infer/1.0.0 first,
 * then every other connected peer (a span started after we connected is only announced by an
 * identify push); probing drops the ones that do not answer the protocol.
 */
export async function layerServerCandidates (libp2p: Libp2p): Promise<PeerId[]> {
  const known: PeerId[] = []
  const others: PeerId[] = []
  for (const peer of libp2p.getPeers()) {
    try {
      const info = await libp2p.peerStore.get(peer)
      if (info.protocols.includes(INFER_PROTOCOL)) { known.push(peer); continue }
    } catch {}
    others.push(peer)
  }
  return [...known, ...others]
}
