import { decodeCanonicalJson } from './canonical-json.ts'
import { ShardRejectedError } from './errors.ts'
import { computeMembership, decodeMembershipOp, type MembershipView } from './membership.ts'
import { SIGNATURE_CONTEXTS, verifySignature } from '../identity/index.ts'
import { decodeShard, type Shard } from './shard.ts'
import type { ShardStore } from './store.ts'

export interface ValidationContext {
  store: ShardStore
  /** The current membership of a team this node is in (undefined: not in the team). */
  membership: (teamId: string) => MembershipView | undefined
  now: () => number
  maxClockSkewMs: number
  /** Checks a memory/relation/retraction body (the brain's rules); throws ShardRejectedError. */
  checkBody?: (shard: Shard) => void
  /**
   * Whether the shard is stored already, when the caller can tell faster than the store (an
   * in-memory index of the team's shards); default: store.has. Only an early way out for
   * duplicates: the store ignores a duplicate insert anyway.
   */
  isStored?: (shard: Shard) => boolean
}

export interface AcceptedShard {
  shard: Shard
  dispute?: { target: string, reason: string }
}

const MAX_DISPUTE_REASON = 1024

function parseBodyObject (shard: Shard): Record<string, unknown> {
  try {
    const value = decodeCanonicalJson(shard.body)
    if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError('not an object')
    return value as Record<string, unknown>
  } catch (err) {
    throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `${shard.kind} body is not a canonical JSON object: ${(err as Error).message}`)
  }
}

/**
 * Every check a shard from outside must pass before anything of it is stored or forwarded:
 * size, schema and canonical form, signature, team, clock skew, the author's membership at the
 * shard's time, supersession only of the author's own shards, and the kind's body rules.
 * Returns undefined for a duplicate (already stored: ignore, do not penalise).
 */
export function validateShard (bytes: Uint8Array, context: ValidationContext, expectedTeam?: string, signatureVerified = false, decoded?: Shard): AcceptedShard | undefined {
  // `decoded`: the caller already decoded these bytes (structure checked, signature not);
  // `signatureVerified`: the caller already checked this exact content's signature (worker pool)
  const shard = decoded ?? decodeShard(bytes, { verify: false })
  if (!signatureVerified && !verifySignature(Buffer.from(shard.authorKey, 'hex'), SIGNATURE_CONTEXTS.shard, shard.content, shard.signature)) {
    throw new ShardRejectedError('ERR_SHARD_BAD_SIGNATURE', 'shard signature does not verify')
  }
  if (expectedTeam != null && shard.teamId !== expectedTeam) throw new ShardRejectedError('ERR_SHARD_WRONG_TEAM', `shard is for team ${shard.teamId}, not ${expectedTeam}`)
  if (context.isStored != null ? context.isStored(shard) : context.store.has(shard.id)) return undefined
  const membership = context.membership(shard.teamId)
  if (membership == null) throw new ShardRejectedError('ERR_SHARD_WRONG_TEAM', `this node is not in team ${shard.teamId}`)
  if (shard.hlc.wallMs > context.now() + context.maxClockSkewMs) {
    throw new ShardRejectedError('ERR_SHARD_CLOCK_SKEW', `shard time ${new Date(shard.hlc.wallMs).toISOString()} is more than ${context.maxClockSkewMs} ms in the future`)
  }

  if (shard.kind === 'membership') {
    const op = decodeMembershipOp(shard.body)
    if (op.op !== 'join' && op.op !== 'create' && !membership.members.has(shard.authorKey)) {
      throw new ShardRejectedError('ERR_SHARD_UNKNOWN_AUTHOR', `membership op by ${shard.author}, who was never a member`)
    }
    if (op.op === 'join' || op.op === 'create') {
      // a join or genesis stands on its own proofs: it must take effect, else it is refused
      const view = computeMembership(shard.teamId, [...context.store.membershipShards(shard.teamId), shard])
      const ignored = view.ignored.find((i) => i.id === shard.id)
      if (ignored != null && !membership.members.has(shard.authorKey)) throw new ShardRejectedError('ERR_SHARD_UNKNOWN_AUTHOR', `${op.op} refused: ${ignored.reason}`)
    }
    return { shard }
  }

  if (!membership.isMemberAt(shard.authorKey, shard.hlc)) {
    if (membership.members.has(shard.authorKey)) throw new ShardRejectedError('ERR_SHARD_REVOKED_AUTHOR', `author ${shard.author} was not a member at the shard's time (removed)`)
    throw new ShardRejectedError('ERR_SHARD_UNKNOWN_AUTHOR', `author ${shard.author} is not a member of team ${shard.teamId}`)
  }
  for (const superseded of shard.supersedes) {
    const author = context.store.authorOf(superseded)
    if (author != null && author !== shard.author) throw new ShardRejectedError('ERR_SHARD_BAD_SUPERSEDES', `shard supersedes ${superseded}, which another author wrote`)
  }

  switch (shard.kind) {
    case 'dispute': {
      const body = parseBodyObject(shard)
      if (typeof body.target !== 'string' || !/^[0-9a-f]{64}$/.test(body.target)) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', 'a dispute names its target shard id (64 hex)')
      if (typeof body.reason !== 'string' || body.reason.length === 0 || body.reason.length > MAX_DISPUTE_REASON) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `a dispute has a reason of 1..${MAX_DISPUTE_REASON} characters`)
      if (Object.keys(body).some((k) => k !== 'target' && k !== 'reason')) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', 'a dispute body holds only target and reason')
      return { shard, dispute: { target: body.target, reason: body.reason } }
    }
    case 'memory':
    case 'relation':
    case 'retraction': {
      // the body is the brain's signed export line of the record (docs/protocols.md#shard-bodies)
      const body = parseBodyObject(shard)
      if (body.type !== shard.kind) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `a ${shard.kind} shard carries a ${shard.kind} record, not ${String(body.type)}`)
      if (body.author !== shard.author || body.author_key !== shard.authorKey) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', 'the record names another author than the shard')
      if (shard.kind === 'memory' && body.visibility !== shard.visibility) throw new ShardRejectedError('ERR_SHARD_BAD_BODY', 'the memory record and the shard disagree on visibility')
      context.checkBody?.(shard)
      return { shard }
    }
    case 'skill':
      parseBodyObject(shard)
      context.checkBody?.(shard)
      return { shard }
  }
  throw new ShardRejectedError('ERR_SHARD_MALFORMED', `unhandled shard kind ${String(shard.kind)}`)
}
