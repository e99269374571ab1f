import { createHash } from 'node:crypto'
import { z } from 'zod'
import { SIGNATURE_CONTEXTS, verifySignature } from '../identity/index.ts'
import { decodeCanonicalJson, encodeCanonicalJson } from './canonical-json.ts'
import { ShardRejectedError } from './errors.ts'
import { compareHlc, type HlcTime } from './hlc.ts'
import type { Shard } from './shard.ts'

export type Role = 'admin' | 'member'

const HEX32 = z.string().regex(/^[0-9a-f]{64}$/)
const HEX64 = z.string().regex(/^[0-9a-f]{128}$/)

/** An invite capability: an admin lets whoever holds the invite key join once, before expiry. */
export const capabilitySchema = z.object({
  team: HEX32,
  invite_key: HEX32,
  role: z.enum(['admin', 'member']),
  expires_at: z.number().int().nonnegative(),
  issuer: HEX32
}).strict()
export type InviteCapability = z.infer<typeof capabilitySchema>

const parents = z.array(HEX32).max(64)

export const membershipOpSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('create'), name: z.string().min(1).max(128), nonce: HEX32, parents }).strict(),
  z.object({ op: z.literal('add'), member: HEX32, role: z.enum(['admin', 'member']), parents }).strict(),
  z.object({ op: z.literal('remove'), member: HEX32, parents }).strict(),
  z.object({ op: z.literal('join'), capability: capabilitySchema, capability_sig: HEX64, proof: HEX64, parents }).strict(),
  z.object({ op: z.literal('revoke-invite'), invite_key: HEX32, parents }).strict()
])
export type MembershipOp = z.infer<typeof membershipOpSchema>

/** The team id is derived from the genesis, so nobody else can claim to have created a team. */
export function deriveTeamId (creatorKey: string, name: string, nonce: string): string {
  return createHash('sha256').update('permagent/team/id/v1\u0000').update(Buffer.from(creatorKey, 'hex')).update(name).update('\u0000').update(Buffer.from(nonce, 'hex')).digest('hex')
}

export function encodeMembershipOp (op: MembershipOp): Uint8Array {
  return encodeCanonicalJson(op)
}

export function decodeMembershipOp (body: Uint8Array): MembershipOp {
  let json: unknown
  try {
    json = decodeCanonicalJson(body)
  } catch (err) {
    throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `membership body is not canonical JSON: ${(err as Error).message}`)
  }
  const parsed = membershipOpSchema.safeParse(json)
  if (!parsed.success) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `membership body: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return parsed.data
}

/** What the invite key signs to bind an invite to the joiner's key. */
export function joinProofMessage (teamId: string, joinerKey: string): Uint8Array {
  return new TextEncoder().encode(`join:${teamId}:${joinerKey}`)
}

export function capabilityBytes (capability: InviteCapability): Uint8Array {
  return encodeCanonicalJson(capability)
}

export interface MemberInterval {
  from: HlcTime
  to: HlcTime | null
}

export interface MemberState {
  publicKey: string
  brainId: string
  role: Role
  /** Membership periods; a member removed and re-added has several. */
  intervals: MemberInterval[]
  active: boolean
}

export interface MembershipView {
  teamId: string
  name: string
  genesisId: string
  members: Map<string, MemberState>
  /** Ops applied, and ops ignored (authored by a non-admin at their point in the order, etc.). */
  applied: string[]
  ignored: Array<{ id: string, reason: string }>
  /** Whether `publicKey` was a member at time `at`. */
  isMemberAt: (publicKey: string, at: HlcTime) => boolean
  isActiveMember: (publicKey: string) => boolean
  isAdmin: (publicKey: string) => boolean
}

function brainIdOfKey (key: string): string {
  return createHash('sha256').update(Buffer.from(key, 'hex')).digest('hex')
}

/**
 * Computes a team's membership from its membership shards. Ops are applied in (hlc, id) order,
 * which extends the causal order because an author's clock has observed every parent it names;
 * every node holding the same ops computes the same membership, concurrent admin ops included.
 * An op whose author lacks the right at its point in the order is ignored (not an error: another
 * node may have ordered it the same way and ignored it too).
 */
export function computeMembership (teamId: string, shards: Shard[]): MembershipView {
  const ops = shards
    .filter((s) => s.kind === 'membership' && s.teamId === teamId)
    .map((shard) => ({ shard, op: decodeMembershipOp(shard.body) }))
    .sort((a, b) => compareHlc(a.shard.hlc, b.shard.hlc) || (a.shard.id < b.shard.id ? -1 : a.shard.id > b.shard.id ? 1 : 0))
  const members = new Map<string, MemberState>()
  const usedInvites = new Set<string>()
  const revokedInvites = new Set<string>()
  const applied: string[] = []
  const ignored: Array<{ id: string, reason: string }> = []
  let name = ''
  let genesisId = ''
  const isAdmin = (key: string): boolean => members.get(key)?.active === true && members.get(key)?.role === 'admin'
  const admit = (key: string, role: Role, at: HlcTime): void => {
    const existing = members.get(key)
    if (existing == null) {
      members.set(key, { publicKey: key, brainId: brainIdOfKey(key), role, intervals: [{ from: at, to: null }], active: true })
    } else {
      existing.role = role
      if (!existing.active) {
        existing.intervals.push({ from: at, to: null })
        existing.active = true
      }
    }
  }

  for (const { shard, op } of ops) {
    const author = shard.authorKey
    const at = shard.hlc
    const ignore = (reason: string): void => { ignored.push({ id: shard.id, reason }) }
    if (genesisId === '') {
      if (op.op !== 'create') { ignore('no genesis yet'); continue }
      if (deriveTeamId(author, op.name, op.nonce) !== teamId) { ignore('genesis does not derive this team id'); continue }
      genesisId = shard.id
      name = op.name
      admit(author, 'admin', at)
      applied.push(shard.id)
      continue
    }
    switch (op.op) {
      case 'create':
        ignore('a second genesis')
        break
      case 'add':
        if (!isAdmin(author)) { ignore('author is not an admin'); break }
        admit(op.member, op.role, at)
        applied.push(shard.id)
        break
      case 'remove': {
        const target = members.get(op.member)
        if (!isAdmin(author) && author !== op.member) { ignore('author is not an admin'); break }
        if (target == null || !target.active) { ignore('not a member'); break }
        target.active = false
        target.intervals[target.intervals.length - 1].to = at
        applied.push(shard.id)
        break
      }
      case 'revoke-invite':
        if (!isAdmin(author)) { ignore('author is not an admin'); break }
        revokedInvites.add(op.invite_key)
        applied.push(shard.id)
        break
      case 'join': {
        const cap = op.capability
        if (cap.team !== teamId) { ignore('invite is for another team'); break }
        if (!isAdmin(cap.issuer)) { ignore('invite issuer is not an admin'); break }
        if (at.wallMs > cap.expires_at) { ignore('invite expired'); break }
        if (revokedInvites.has(cap.invite_key)) { ignore('invite revoked'); break }
        if (usedInvites.has(cap.invite_key)) { ignore('invite already used'); break }
        if (!verifySignature(Buffer.from(cap.issuer, 'hex'), SIGNATURE_CONTEXTS.invite, capabilityBytes(cap), Buffer.from(op.capability_sig, 'hex'))) { ignore('invite signature invalid'); break }
        if (!verifySignature(Buffer.from(cap.invite_key, 'hex'), SIGNATURE_CONTEXTS.invite, joinProofMessage(teamId, author), Buffer.from(op.proof, 'hex'))) { ignore('join proof invalid'); break }
        usedInvites.add(cap.invite_key)
        admit(author, cap.role, at)
        applied.push(shard.id)
        break
      }
    }
  }

  return {
    teamId,
    name,
    genesisId,
    members,
    applied,
    ignored,
    isMemberAt: (key, at) => {
      const member = members.get(key)
      if (member == null) return false
      return member.intervals.some((i) => compareHlc(i.from, at) <= 0 && (i.to == null || compareHlc(at, i.to) < 0))
    },
    isActiveMember: (key) => members.get(key)?.active === true,
    isAdmin: (key) => isAdmin(key)
  }
}
