import { PermagentError } from '../util/errors.ts'

/**
 * A shard was refused. `code` says why, so gossip can score the sender and tests can check the
 * exact reason: ERR_SHARD_MALFORMED, ERR_SHARD_NON_CANONICAL, ERR_SHARD_TOO_LARGE,
 * ERR_SHARD_BAD_SIGNATURE, ERR_SHARD_WRONG_TEAM, ERR_SHARD_UNKNOWN_AUTHOR, ERR_SHARD_REVOKED_AUTHOR,
 * ERR_SHARD_CLOCK_SKEW, ERR_SHARD_BAD_BODY, ERR_SHARD_BAD_SUPERSEDES, ERR_SHARD_PRIVATE.
 */
export class ShardRejectedError extends PermagentError {}

export class TeamError extends PermagentError {}

export class UnknownTeamError extends PermagentError {
  constructor (teamId: string) {
    super('ERR_UNKNOWN_TEAM', `this node is not in team ${teamId}; list teams with \`permagent team list\``)
  }
}

export class InviteError extends PermagentError {}
