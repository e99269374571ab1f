import type { Permagent } from '../../src/permagent.ts'
import { createSwarm, waitUntil, type Swarm } from '../../src/simulation/index.ts'
import { canonicalJson, type TeamService } from '../../src/team/index.ts'

export interface TeamSwarm {
  swarm: Swarm
  teams: TeamService[]
  stop: () => Promise<void>
}

/** A swarm of full nodes; `teams` are their team services. */
export async function createTeamSwarm (nodes: number, options: { topology?: 'full' | 'ring' | 'random-k', now?: () => number } = {}): Promise<TeamSwarm> {
  const swarm = await createSwarm({ nodes, topology: options.topology ?? 'full', k: 3, seed: 5, nodeOptions: () => ({ team: { now: options.now } }) })
  return {
    swarm,
    teams: swarm.nodes.map((n) => n.team),
    stop: async () => { await swarm.stop() }
  }
}

/** A real signed memory of `node`'s brain (visibility team), as the body a memory shard carries. */
export function memoryBody (node: Permagent, content: string): Uint8Array {
  const { memory } = node.brain.remember({ content, visibility: 'team' })
  const line = node.brain.signedLine(memory.id)
  if (line == null) throw new Error('no signed line')
  return new TextEncoder().encode(canonicalJson(JSON.parse(line)))
}

/** The same, with fields changed after signing (for tamper and impersonation tests). */
export function alteredMemoryBody (node: Permagent, content: string, change: Record<string, unknown>): Uint8Array {
  const { memory } = node.brain.remember({ content, visibility: 'team' })
  const line = JSON.parse(node.brain.signedLine(memory.id) ?? '{}')
  return new TextEncoder().encode(canonicalJson({ ...line, ...change }))
}

export async function waitForCount (teams: TeamService[], teamId: string, count: number, timeoutMs = 20_000): Promise<void> {
  await waitUntil(() => teams.every((t) => t.store.team(teamId) != null && t.store.count(teamId) >= count), {
    events: teams.map((t) => ({ target: t.events, type: 'shard' })),
    timeoutMs,
    what: `every node holding ${count} shards of the team`
  })
}

/** The first service creates a team and invites every other one into it. */
export async function formTeam (teams: TeamService[], name = 'research'): Promise<string> {
  const { teamId } = await teams[0].createTeam(name)
  for (const member of teams.slice(1)) {
    const { token } = await teams[0].createInvite(teamId)
    await member.join(token)
  }
  return teamId
}
