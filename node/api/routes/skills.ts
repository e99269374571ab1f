import { isAbsolute } from 'node:path'
import { z } from 'zod'
import { InvalidInputError } from '../../../src/util/errors.ts'
import type { Permagent } from '../../../src/permagent.ts'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const teamId = z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 hex characters')
const spec = z.string().min(1).max(160)
const publishBody = z.object({
  dir: z.string().min(1).max(4096).refine((d) => isAbsolute(d), 'the skill directory is an absolute path'),
  team: teamId.optional()
}).strict()
const installBody = z.object({ spec, team: teamId.optional(), author: z.string().min(8).max(64).optional(), allowYanked: z.boolean().optional() }).strict()
const upgradeBody = z.object({ name: spec.optional() }).strict()
const removeBody = z.object({ name: spec }).strict()
const yankBody = z.object({ spec, team: teamId.optional(), reason: z.string().min(1).max(512).optional() }).strict()
const activityBody = z.object({
  tool: z.string().min(1).max(128).optional(),
  command: z.string().min(1).max(128).optional(),
  arguments: z.unknown().optional()
}).strict().refine((b) => (b.tool != null) !== (b.command != null), 'give exactly one of tool and command')

/** Install and upgrade fetch from peers: their replies may take a while. */
const FETCHING_TIMEOUT_MS = 150_000

function optionalTeam (query: URLSearchParams): string | undefined {
  const value = query.get('team')
  return value == null || value === '' ? undefined : parseBody(teamId, value)
}

/** The team to publish on: the one given, else the node's only team. */
function publishTeam (node: Permagent, team: string | undefined): string {
  if (team != null) return team
  const teams = node.team.teams()
  if (teams.length === 1) return teams[0].teamId
  throw new InvalidInputError(teams.length === 0
    ? 'this node is in no team yet: `permagent team create NAME` or `permagent team join TOKEN`'
    : `this node is in ${teams.length} teams; say which with --team (${teams.map((t) => `${t.name}: ${t.teamId}`).join(', ')})`)
}

function numberParam (query: URLSearchParams, name: string, min: number, max: number): number | undefined {
  const raw = query.get(name)
  if (raw == null || raw === '') return undefined
  const value = Number(raw)
  if (!Number.isFinite(value) || value < min || value > max) throw new InvalidInputError(`${name} must be a number from ${min} to ${max}`)
  return value
}

/** Skills: publish, list, show, install, upgrade, remove, yank; agent activity and suggestions. */
export const skillsRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/skills/publish',
    maxBodyBytes: 8192,
    handler: async ({ node, body }) => {
      const b = parseBody(publishBody, body)
      return await node.skills.publish(b.dir, publishTeam(node, b.team))
    }
  },
  {
    method: 'GET',
    path: '/api/skills/list',
    handler: async ({ node, query }) => await node.skills.list({ teamId: optionalTeam(query) })
  },
  {
    method: 'GET',
    path: '/api/skills/show',
    handler: async ({ node, query }) => {
      const author = query.get('author') ?? undefined
      if (author != null && (author.length < 8 || author.length > 64)) throw new InvalidInputError('author is 8 to 64 characters of a brain id')
      return await node.skills.show(parseBody(spec, query.get('spec') ?? ''), { teamId: optionalTeam(query), author })
    }
  },
  {
    method: 'POST',
    path: '/api/skills/install',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => {
      const b = parseBody(installBody, body)
      return await node.skills.install(b.spec, { teamId: b.team, author: b.author, allowYanked: b.allowYanked, signal: AbortSignal.any([signal, AbortSignal.timeout(FETCHING_TIMEOUT_MS)]) })
    }
  },
  {
    method: 'POST',
    path: '/api/skills/upgrade',
    maxBodyBytes: 4096,
    handler: async ({ node, body, signal }) => ({ results: await node.skills.upgrade(parseBody(upgradeBody, body).name, { signal: AbortSignal.any([signal, AbortSignal.timeout(FETCHING_TIMEOUT_MS)]) }) })
  },
  {
    method: 'POST',
    path: '/api/skills/remove',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => await node.skills.remove(parseBody(removeBody, body).name)
  },
  {
    method: 'POST',
    path: '/api/skills/yank',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => {
      const b = parseBody(yankBody, body)
      return await node.skills.yank(b.spec, { teamId: b.team, reason: b.reason })
    }
  },
  {
    // from an agent runtime: a tool or command name and its arguments, of which only the shape is kept
    method: 'POST',
    path: '/api/skills/activity',
    maxBodyBytes: 64 * 1024,
    handler: async ({ node, body }) => {
      const b = parseBody(activityBody, body)
      const event = b.tool != null ? { kind: 'tool' as const, name: b.tool, arguments: b.arguments } : { kind: 'command' as const, name: b.command ?? '', arguments: b.arguments }
      return { recorded: true, shape: node.skills.recordActivity(event).shape }
    }
  },
  {
    method: 'GET',
    path: '/api/skills/suggest',
    handler: async ({ node, query }) => {
      const minRepeats = numberParam(query, 'minRepeats', 2, 1_000_000)
      const days = numberParam(query, 'days', 0.001, 365)
      return { suggestions: node.skills.suggest({ minRepeats: minRepeats != null ? Math.floor(minRepeats) : undefined, windowMs: days != null ? days * 86_400_000 : undefined }) }
    }
  }
]
