import { z } from 'zod'
import { parseBody } from '../body.ts'
import type { Route } from '../router.ts'

const teamId = z.string().regex(/^[0-9a-f]{64}$/, 'a team id is 64 hex characters')
const createBody = z.object({ name: z.string().min(1).max(128), teamOnly: z.boolean().optional() }).strict()
const inviteBody = z.object({
  team: teamId,
  role: z.enum(['admin', 'member']).optional(),
  expiresInMs: z.number().int().min(60_000).max(365 * 24 * 3600_000).optional(),
  bootstrap: z.array(z.string().max(1024)).max(32).optional()
}).strict()
const joinBody = z.object({ token: z.string().min(1).max(256 * 1024) }).strict()
const removeBody = z.object({ team: teamId, member: z.string().min(1).max(128) }).strict()
const disputeBody = z.object({ team: teamId, shard: z.string().regex(/^[0-9a-f]{64}$/, 'a shard id is 64 hex characters'), reason: z.string().min(1).max(1024) }).strict()
const teamOnlyBody = z.object({ team: teamId, teamOnly: z.boolean() }).strict()

/** Teams: create, invite, join, list, members, remove, dispute, team-only mode. */
export const teamRoutes: Route[] = [
  {
    method: 'POST',
    path: '/api/team/create',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => {
      const { name, teamOnly } = parseBody(createBody, body)
      return await node.team.createTeam(name, { teamOnly })
    }
  },
  {
    method: 'POST',
    path: '/api/team/invite',
    maxBodyBytes: 64 * 1024,
    handler: async ({ node, body }) => {
      const b = parseBody(inviteBody, body)
      return await node.team.createInvite(b.team, { role: b.role, expiresInMs: b.expiresInMs, bootstrap: b.bootstrap })
    }
  },
  {
    method: 'POST',
    path: '/api/team/join',
    maxBodyBytes: 300 * 1024,
    handler: async ({ node, body }) => await node.team.join(parseBody(joinBody, body).token)
  },
  {
    method: 'GET',
    path: '/api/team/list',
    handler: async ({ node }) => ({ teams: node.team.teams().map((t) => ({ teamId: t.teamId, name: t.name, members: t.members, teamOnly: t.teamOnly, joinedAt: new Date(t.joinedAt).toISOString(), shards: node.team.store.count(t.teamId) })) })
  },
  {
    method: 'GET',
    path: '/api/team/:team/members',
    handler: async ({ node, params }) => ({ members: node.team.members(teamId.parse(params.team)) })
  },
  {
    method: 'POST',
    path: '/api/team/remove',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => {
      const b = parseBody(removeBody, body)
      await node.team.removeMember(b.team, b.member)
      return { removed: b.member }
    }
  },
  {
    method: 'POST',
    path: '/api/team/dispute',
    maxBodyBytes: 8192,
    handler: async ({ node, body }) => {
      const b = parseBody(disputeBody, body)
      const shard = await node.team.dispute(b.team, b.shard, b.reason)
      return { disputeId: shard.id }
    }
  },
  {
    method: 'POST',
    path: '/api/team/team-only',
    maxBodyBytes: 4096,
    handler: async ({ node, body }) => {
      const b = parseBody(teamOnlyBody, body)
      node.team.setTeamOnly(b.team, b.teamOnly)
      return { team: b.team, teamOnly: b.teamOnly }
    }
  }
]
