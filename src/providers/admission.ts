import { isPeerId, type Libp2p, type PeerId } from '@libp2p/interface'
import { createPolicyGater, type PolicyGater } from '../mesh/index.ts'
import { UnknownTeamError } from '../team/index.ts'
import { PROVIDER_ERRORS, ProviderError } from './errors.ts'

/** What admission needs of the team module: current membership (signed membership log). */
export interface TeamMembership {
  isMember: (teamId: string, peer: PeerId) => boolean
  membership: (teamId: string) => unknown
}

/**
 * Which peers one mesh request may send activations to. A request-scoped PolicyGater (the same
 * rule set the node's connection gater uses): the node's own gater must allow the peer, and in
 * team-mesh mode the peer must be an active member of the team right now.
 */
export interface PeerAdmission {
  readonly privacy: 'team-mesh' | 'mesh'
  readonly team?: string
  readonly rules: PolicyGater
  allows: (peer: PeerId) => boolean
}

export function createPeerAdmission (options: { nodeGater: PolicyGater, team?: { id: string, membership: TeamMembership } }): PeerAdmission {
  const rules = createPolicyGater()
  // a peer the node refuses (team-only mode, a later rule) is refused here too, even on an old connection
  rules.setRule('node-gater', (peer) => options.nodeGater.allows(peer))
  const team = options.team
  if (team != null) {
    if (team.membership.membership(team.id) == null) throw new UnknownTeamError(team.id)
    rules.setRule('team-member', (peer) => team.membership.isMember(team.id, peer))
  }
  return {
    privacy: team != null ? 'team-mesh' : 'mesh',
    team: team?.id,
    rules,
    allows: rules.allows
  }
}

/**
 * The libp2p node as a mesh client sees it for one request: dialing a protocol (every split
 * inference stream: probes, sessions, failover replacements) to a peer the admission refuses
 * fails with ERR_PEER_NOT_ADMITTED before a byte is sent. MeshModel treats that like a failed
 * server and moves to the next one for the span, so a non-member is never sent activations even
 * if it answered a probe earlier or sits in a planned chain.
 */
export function admittedLibp2p (libp2p: Libp2p, admission: PeerAdmission): Libp2p {
  const check = (target: unknown): void => {
    if (!isPeerId(target)) throw new ProviderError(PROVIDER_ERRORS.peerNotAdmitted, 'a mesh request under an admission policy dials peers by id only')
    if (!admission.allows(target)) {
      throw new ProviderError(PROVIDER_ERRORS.peerNotAdmitted, admission.team != null
        ? `peer ${target.toString()} is not a member of team ${admission.team}; team-mesh sends activations to members only`
        : `peer ${target.toString()} is refused by this node's connection policy`)
    }
  }
  return new Proxy(libp2p, {
    get (target, property) {
      if (property === 'dialProtocol') {
        return async (peer: PeerId, protocols: string | string[], options?: Parameters<Libp2p['dialProtocol']>[2]) => {
          check(peer)
          return await target.dialProtocol(peer, protocols, options)
        }
      }
      if (property === 'dial') {
        return async (peer: PeerId, options?: Parameters<Libp2p['dial']>[1]) => {
          check(peer)
          return await target.dial(peer, options)
        }
      }
      const value = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}
