import type { ConnectionGater, PeerId } from '@libp2p/interface'

/** A rule that may refuse a peer; every installed rule must allow a peer for it to connect. */
export type PeerRule = (peerId: PeerId) => boolean

/**
 * The node's connection gater. Modules install named rules at run time (the team module installs
 * "team members only" when team-only mode is on) without rebuilding the libp2p node.
 */
export interface PolicyGater {
  readonly gater: ConnectionGater
  setRule: (name: string, rule: PeerRule) => void
  removeRule: (name: string) => void
  allows: (peerId: PeerId) => boolean
}

export function createPolicyGater (): PolicyGater {
  const rules = new Map<string, PeerRule>()
  const allows = (peerId: PeerId): boolean => {
    for (const rule of rules.values()) {
      if (!rule(peerId)) return false
    }
    return true
  }
  const deny = (peerId: PeerId): boolean => !allows(peerId)
  return {
    gater: {
      denyDialPeer: deny,
      denyInboundEncryptedConnection: deny,
      denyOutboundEncryptedConnection: deny
    },
    setRule: (name, rule) => { rules.set(name, rule) },
    removeRule: (name) => { rules.delete(name) },
    allows
  }
}
