import type { Brain, RecallHit, RememberInput, RememberResult, Retraction } from '../brain/index.ts'
import type { Logger } from '../util/logger.ts'
import { PermagentError } from '../util/errors.ts'
import { decodeCanonicalJson, encodeCanonicalJson } from './canonical-json.ts'
import { ShardRejectedError, TeamError } from './errors.ts'
import type { TeamMemoryPort, TeamService } from './service.ts'
import { toShardVisibility, type Shard, type ShardKind } from './shard.ts'

/** A memory that stays on this node was asked to leave it. */
export class PrivateMemoryError extends PermagentError {
  constructor (id: string) {
    super('ERR_PRIVATE_MEMORY', `memory ${id} is private and never leaves this node; remember it with --visibility team (or org, public) to share it`)
  }
}

export interface TeamRecallHit extends RecallHit {
  teamId: string
  shardId: string | null
  /** When the author recorded it (ISO). */
  time: string
  /** The author's local trust weight (config team.trust), applied to `score`. */
  trust: number
  disputes: Array<{ disputeId: string, author: string, reason: string, at: string }>
  supersededBy: string[]
}

export interface BrainBridge {
  readonly port: TeamMemoryPort
  /** Remembers and, when visibility is team or wider, shares with `teamId` (or the only team). */
  remember: (input: RememberInput, teamId?: string) => Promise<RememberResult & { shared: { teamId: string, shardId: string } | null, note?: string }>
  /** Shares an existing memory, relation or retraction of this brain with a team. */
  share: (recordId: string, teamId: string) => Promise<Shard>
  /** Retracts locally and tells every team the retracted records were shared with. */
  forget: (idOrKey: string, reason?: string | null) => Promise<Retraction[]>
  /** Recall over what a team shares (others' shards and our own shared memories), with provenance. */
  recall: (query: string, teamId: string, options?: { limit?: number }) => { hits: TeamRecallHit[] }
}

const RECORD_KINDS = new Set<ShardKind>(['memory', 'relation', 'retraction'])

function lineOf (shard: Shard): string {
  return new TextDecoder().decode(shard.body)
}

/**
 * Joins the brain and the team module: what a shard carries is the brain's signed export line of
 * a record, so a shared fact keeps its author's record signature end to end and recalls like a
 * local memory, marked with its author and team. This is the one place that lets a record leave
 * the node, and it refuses private ones.
 */
export function createBrainBridge (options: { brain: Brain, team: TeamService, logger: Logger }): BrainBridge {
  const { brain, team } = options
  const me = brain.brainId

  const port: TeamMemoryPort = {
    checkBody (shard) {
      if (!RECORD_KINDS.has(shard.kind)) return
      const line = decodeCanonicalJson(shard.body) as Record<string, unknown>
      if (shard.kind === 'memory' && toShardVisibility(String(line.visibility)) == null) {
        throw new ShardRejectedError('ERR_SHARD_PRIVATE', 'a shared memory must have visibility team, org or public')
      }
    },
    ingest (shards) {
      const links = new Map<string, string>()
      const byTeam = new Map<string, Shard[]>()
      for (const shard of shards) {
        if (!RECORD_KINDS.has(shard.kind)) continue
        byTeam.set(shard.teamId, [...(byTeam.get(shard.teamId) ?? []), shard])
      }
      for (const [teamId, list] of byTeam) {
        try {
          // verifies each record's own signature, validates it against this brain's rules and
          // stores it with source "team"; throws (and writes nothing) if any line is bad
          brain.importLines(list.map(lineOf), { source: 'team', teamId })
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err)
          throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `the brain refused the record: ${message}`)
        }
        for (const shard of list) {
          const id = (decodeCanonicalJson(shard.body) as { id?: unknown }).id
          if (typeof id === 'string') links.set(shard.id, id)
        }
      }
      return links
    }
  }

  const resolveTeam = (teamId: string | undefined): string | undefined => {
    if (teamId != null) {
      if (team.membership(teamId) == null) throw new TeamError('ERR_UNKNOWN_TEAM', `this node is not in team ${teamId}; see \`permagent team list\``)
      return teamId
    }
    const teams = team.teams()
    if (teams.length === 1) return teams[0].teamId
    if (teams.length > 1) throw new TeamError('ERR_TEAM_REQUIRED', `this node is in ${teams.length} teams; say which with --team (${teams.map((t) => `${t.name}: ${t.teamId}`).join(', ')})`)
    return undefined
  }

  const share = async (recordId: string, teamId: string): Promise<Shard> => {
    const text = brain.signedLine(recordId)
    if (text == null) throw new PermagentError('ERR_NOT_FOUND', `no memory, relation or retraction ${recordId} in this brain`)
    const line = JSON.parse(text) as Record<string, unknown>
    if (line.author !== me) throw new TeamError('ERR_NOT_AUTHOR', `record ${recordId} was written by ${String(line.author)}; only its author shares it`)
    const kind = line.type as ShardKind
    let visibility = toShardVisibility(String(line.visibility ?? 'team'))
    if (kind === 'memory' && visibility == null) throw new PrivateMemoryError(recordId)
    visibility ??= 'team'
    const supersedes: string[] = []
    if (kind === 'memory' && typeof line.supersedes === 'string') {
      const previous = team.shardOfRecord(line.supersedes)
      if (previous != null && team.store.get(previous)?.teamId === teamId) supersedes.push(previous)
    }
    const existing = team.shardOfRecord(recordId)
    if (existing != null && team.store.get(existing)?.teamId === teamId) return team.store.get(existing) as Shard
    const shard = await team.publish(teamId, kind, encodeCanonicalJson(line), visibility, supersedes)
    team.store.setRecordId(shard.id, recordId)
    return shard
  }

  return {
    port,
    share,
    async remember (input, teamIdOption) {
      const visibility = input.visibility ?? 'private'
      const shareable = toShardVisibility(visibility) != null
      // check the team before writing, so a bad --team writes nothing
      const teamId = shareable ? resolveTeam(teamIdOption) : (teamIdOption != null ? resolveTeam(teamIdOption) : undefined)
      if (!shareable && teamIdOption != null) throw new PrivateMemoryError('(new)')
      const result = brain.remember(input)
      if (!shareable) return { ...result, shared: null }
      if (teamId == null) return { ...result, shared: null, note: 'not shared: this node is in no team yet (permagent team create / join)' }
      const shard = await share(result.memory.id, teamId)
      return { ...result, shared: { teamId, shardId: shard.id } }
    },
    async forget (idOrKey, reason) {
      const retractions = brain.forget(idOrKey, reason)
      for (const retraction of retractions) {
        const shardId = team.shardOfRecord(retraction.target)
        const teamId = shardId != null ? team.store.get(shardId)?.teamId : undefined
        if (teamId != null) await share(retraction.id, teamId)
      }
      return retractions
    },
    recall (query, teamId, recallOptions = {}) {
      if (team.membership(teamId) == null) throw new TeamError('ERR_UNKNOWN_TEAM', `this node is not in team ${teamId}`)
      const limit = recallOptions.limit ?? 10
      const candidates = brain.recall(query, { limit: Math.min(500, Math.max(50, limit * 5)), visibility: 'team' }).hits
      const hits: TeamRecallHit[] = []
      for (const hit of candidates) {
        const shardId = team.shardOfRecord(hit.id)
        const shard = shardId != null ? team.store.get(shardId) : undefined
        const inTeam = hit.teamId === teamId || shard?.teamId === teamId
        if (!inTeam) continue
        const provenance = shardId != null ? team.provenance(shardId) : undefined
        const trust = team.trustOf(hit.author)
        hits.push({
          ...hit,
          score: hit.score * trust,
          teamId,
          shardId: shardId ?? null,
          time: provenance?.time ?? hit.recordedAt,
          trust,
          disputes: provenance?.disputes ?? [],
          supersededBy: provenance?.supersededBy ?? []
        })
      }
      hits.sort((a, b) => b.score - a.score)
      return { hits: hits.slice(0, limit) }
    }
  }
}
