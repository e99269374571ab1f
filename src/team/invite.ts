import { z } from 'zod'
import { generateEd25519, identityFromKeyPair, SIGNATURE_CONTEXTS, type Identity } from '../identity/index.ts'
import { InviteError } from './errors.ts'
import { capabilityBytes, joinProofMessage, type InviteCapability, type MembershipOp, type Role } from './membership.ts'

export const INVITE_TOKEN_PREFIX = 'pgi1_'
const MAX_TOKEN_CHARS = 256 * 1024

/**
 * An invite token: everything a new member needs to join without the issuer online — the team's
 * membership log (to check the issuer is an admin), a capability signed by the issuer, the
 * one-time invite key (key material) that signs the join, where to find peers, and the expiry.
 */
export interface InviteToken {
  v: 1
  teamId: string
  name: string
  capability: InviteCapability
  capabilitySig: string
  /** The invite key's seed, hex: whoever holds the token can join once. */
  inviteSeed: string
  bootstrap: string[]
  /** The team's membership shards (wire bytes, base64), so the joiner can verify the issuer. */
  membership: string[]
}

const tokenSchema = z.object({
  v: z.literal(1),
  teamId: z.string().regex(/^[0-9a-f]{64}$/),
  name: z.string().max(128),
  capability: z.object({
    team: z.string(), invite_key: z.string(), role: z.enum(['admin', 'member']), expires_at: z.number().int(), issuer: z.string()
  }).strict(),
  capabilitySig: z.string().regex(/^[0-9a-f]{128}$/),
  inviteSeed: z.string().regex(/^[0-9a-f]{64}$/),
  bootstrap: z.array(z.string().max(1024)).max(64),
  membership: z.array(z.string().max(96 * 1024)).max(10_000)
}).strict()

export async function issueInvite (issuer: Identity, options: { teamId: string, name: string, role: Role, expiresAt: number, bootstrap: string[], membership: Uint8Array[] }): Promise<{ token: string, capability: InviteCapability }> {
  const invite = generateEd25519()
  const capability: InviteCapability = {
    team: options.teamId,
    invite_key: Buffer.from(invite.publicKey).toString('hex'),
    role: options.role,
    expires_at: options.expiresAt,
    issuer: Buffer.from(issuer.publicKey).toString('hex')
  }
  const capabilitySig = Buffer.from(issuer.sign(SIGNATURE_CONTEXTS.invite, capabilityBytes(capability))).toString('hex')
  const token: InviteToken = {
    v: 1,
    teamId: options.teamId,
    name: options.name,
    capability,
    capabilitySig,
    inviteSeed: Buffer.from(invite.seed).toString('hex'),
    bootstrap: options.bootstrap,
    membership: options.membership.map((b) => Buffer.from(b).toString('base64'))
  }
  return { token: INVITE_TOKEN_PREFIX + Buffer.from(JSON.stringify(token)).toString('base64url'), capability }
}

export function parseInviteToken (text: string): InviteToken {
  const trimmed = text.trim()
  if (trimmed.length > MAX_TOKEN_CHARS) throw new InviteError('ERR_INVITE_INVALID', `the invite token is longer than ${MAX_TOKEN_CHARS} characters`)
  if (!trimmed.startsWith(INVITE_TOKEN_PREFIX)) throw new InviteError('ERR_INVITE_INVALID', `an invite token starts with "${INVITE_TOKEN_PREFIX}"; ask the team admin for a new one (permagent team invite)`)
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(trimmed.slice(INVITE_TOKEN_PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new InviteError('ERR_INVITE_INVALID', 'the invite token is damaged (it does not decode); copy it again whole')
  }
  const parsed = tokenSchema.safeParse(json)
  if (!parsed.success) throw new InviteError('ERR_INVITE_INVALID', `the invite token is damaged: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  const token = parsed.data as InviteToken
  if (token.capability.team !== token.teamId) throw new InviteError('ERR_INVITE_INVALID', 'the invite is for another team than it claims')
  return token
}

/** The join op the new member signs: the capability plus the invite key's proof over the joiner's key. */
export async function buildJoinOp (token: InviteToken, joiner: Identity, parents: string[]): Promise<MembershipOp> {
  const inviteIdentity = await identityFromKeyPair({ seed: new Uint8Array(Buffer.from(token.inviteSeed, 'hex')), publicKey: new Uint8Array(Buffer.from(token.capability.invite_key, 'hex')) })
  const proof = inviteIdentity.sign(SIGNATURE_CONTEXTS.invite, joinProofMessage(token.teamId, Buffer.from(joiner.publicKey).toString('hex')))
  return {
    op: 'join',
    capability: token.capability,
    capability_sig: token.capabilitySig,
    proof: Buffer.from(proof).toString('hex'),
    parents
  }
}
