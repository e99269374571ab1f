import Database from 'better-sqlite3'
import { join } from 'node:path'
import type { Permagent } from '../../src/permagent.ts'
import { createSwarm, type Swarm } from '../../src/simulation/index.ts'
import { encodeCanonicalJson, createTeamService, type TeamService } from '../../src/team/index.ts'
import { waitUntil } from '../../src/simulation/index.ts'

export interface TeamSwarm {
  swarm: Swarm
  teams: TeamService[]
  stop: () => Promise<void>
}

/** A swarm whose nodes each run a team service over their own SQLite file. */
export async function createTeamSwarm (nodes: number, options: { topology?: 'full' | 'ring' | 'random-k', now?: () => number } = {}): Promise<TeamSwarm> {
  const swarm = await createSwarm({ nodes, topology: options.topology ?? 'full', k: 3, seed: 5 })
  const databases: Database.Database[] = []
  const teams: TeamService[] = []
  const attach = async (node: Permagent): Promise<TeamService> => {
    const db = new Database(join(node.dataDir, 'team.db'))
    db.pragma('journal_mode = WAL')
    databases.push(db)
    const service = createTeamService({ identity: node.identity, mesh: node.mesh, db, logger: node.logger, now: options.now })
    await service.start()
    return service
  }
  for (const node of swarm.nodes) teams.push(await attach(node))
  return {
    swarm,
    teams,
    async stop () {
      for (const t of teams) await t.stop()
      await swarm.stop()
      for (const db of databases) db.close()
    }
  }
}

/** A memory record body of the kind the brain publishes (canonical JSON). */
export function memoryBody (author: string, content: string, visibility = 'team'): Uint8Array {
  return encodeCanonicalJson({
    record: 'memory', v: 1, author, key: null, content, kind: 'fact', topic: null, tags: [], visibility,
    confidence: 1000, valid_from: 0, valid_to: null, created_at: 0, supersedes: null, version: 1
  })
}

export async function waitForCount (teams: TeamService[], teamId: string, count: number, timeoutMs = 20_000): Promise<void> {
  await waitUntil(() => teams.every((t) => t.store.team(teamId) != null && t.store.count(teamId) >= count), {
    events: teams.map((t) => ({ target: t.events, type: 'shard' })),
    timeoutMs,
    what: `every node holding ${count} shards of the team`
  })
}
