import type { Database } from 'better-sqlite3'
import { compareHlc, type HlcTime } from './hlc.ts'
import { decodeShard, type Shard } from './shard.ts'

/**
 * Team state in SQLite (in brain.db, beside the records the shards carry): teams this node belongs
 * to, and every accepted shard, append-only. Shards are a rowid table in arrival order (ids are
 * random hashes: as a clustered key they would scatter every insert across the B-tree) with a
 * unique index on the id. Forward-only migrations with their own version table, so the team
 * module evolves independently.
 */
const MIGRATIONS: string[] = [
  `CREATE TABLE team_teams (
     team_id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     joined_at INTEGER NOT NULL,
     team_only INTEGER NOT NULL DEFAULT 0,
     bootstrap TEXT NOT NULL DEFAULT '[]'
   );
   CREATE TABLE team_shards (
     seq INTEGER PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     team_id TEXT NOT NULL,
     author TEXT NOT NULL,
     author_key TEXT NOT NULL,
     kind TEXT NOT NULL,
     visibility TEXT NOT NULL,
     hlc_wall INTEGER NOT NULL,
     hlc_counter INTEGER NOT NULL,
     bytes BLOB NOT NULL,
     received_at INTEGER NOT NULL,
     origin TEXT NOT NULL,
     record_id TEXT
   );
   CREATE INDEX team_shards_record ON team_shards (record_id) WHERE record_id IS NOT NULL;
   CREATE INDEX team_shards_order ON team_shards (team_id, hlc_wall, id);
   CREATE INDEX team_shards_kind ON team_shards (team_id, kind, hlc_wall);
   CREATE TABLE team_supersedes (
     shard_id TEXT NOT NULL,
     superseded_id TEXT NOT NULL,
     PRIMARY KEY (superseded_id, shard_id)
   ) WITHOUT ROWID;
   CREATE TABLE team_disputes (
     dispute_id TEXT PRIMARY KEY,
     target_id TEXT NOT NULL,
     team_id TEXT NOT NULL,
     author TEXT NOT NULL,
     reason TEXT NOT NULL,
     hlc_wall INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX team_disputes_target ON team_disputes (target_id);`
]

export interface TeamRow {
  teamId: string
  name: string
  joinedAt: number
  teamOnly: boolean
  bootstrap: string[]
}

export interface StoredShard {
  id: string
  teamId: string
  hlc: HlcTime
  bytes: Uint8Array
}

export interface ShardStore {
  putTeam: (team: TeamRow) => void
  teams: () => TeamRow[]
  team: (teamId: string) => TeamRow | undefined
  setTeamOnly: (teamId: string, teamOnly: boolean) => void
  has: (id: string) => boolean
  /** Inserts shards (already validated) in one transaction; returns the ids that were new. */
  insert: (shards: Array<{ shard: Shard, origin: string, dispute?: { target: string, reason: string } }>, alsoInTransaction?: (fresh: Shard[]) => void) => string[]
  get: (id: string) => Shard | undefined
  getBytes: (ids: string[]) => Map<string, Uint8Array>
  membershipShards: (teamId: string) => Shard[]
  /** Every shard of a team in (hlc, id) order, as (timestamp, id) for reconciliation. */
  index: (teamId: string) => Array<{ timestamp: number, id: string }>
  count: (teamId: string) => number
  supersededBy: (id: string) => string[]
  disputesOf: (id: string) => Array<{ disputeId: string, author: string, reason: string, at: number }>
  authorOf: (id: string) => string | undefined
  /** Links a shard to the brain record it carries (memory, relation or retraction id). */
  setRecordId: (shardId: string, recordId: string) => void
  shardOfRecord: (recordId: string) => string | undefined
}

export function openShardStore (db: Database): ShardStore {
  // the store has this connection to itself (beside the brain's own on the same file): a cache
  // that holds the id index of a few hundred thousand shards keeps a catch-up's inserts and
  // lookups off the disk (SQLite's default is 2 MiB)
  db.pragma('cache_size = -32768')
  db.exec('CREATE TABLE IF NOT EXISTS team_schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)')
  const current = (db.prepare('SELECT max(version) AS v FROM team_schema').get() as { v: number | null }).v ?? 0
  db.transaction(() => {
    for (let version = current + 1; version <= MIGRATIONS.length; version++) {
      db.exec(MIGRATIONS[version - 1])
      db.prepare('INSERT INTO team_schema (version, applied_at) VALUES (?, ?)').run(version, Date.now())
    }
  })()

  const statements = {
    putTeam: db.prepare('INSERT INTO team_teams (team_id, name, joined_at, team_only, bootstrap) VALUES (@teamId, @name, @joinedAt, @teamOnly, @bootstrap) ON CONFLICT (team_id) DO UPDATE SET name = excluded.name, bootstrap = excluded.bootstrap'),
    teams: db.prepare('SELECT team_id, name, joined_at, team_only, bootstrap FROM team_teams ORDER BY joined_at'),
    team: db.prepare('SELECT team_id, name, joined_at, team_only, bootstrap FROM team_teams WHERE team_id = ?'),
    setTeamOnly: db.prepare('UPDATE team_teams SET team_only = ? WHERE team_id = ?'),
    has: db.prepare('SELECT 1 FROM team_shards WHERE id = ?').pluck(),
    insert: db.prepare('INSERT OR IGNORE INTO team_shards (id, team_id, author, author_key, kind, visibility, hlc_wall, hlc_counter, bytes, received_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    insertSupersedes: db.prepare('INSERT OR IGNORE INTO team_supersedes (shard_id, superseded_id) VALUES (?, ?)'),
    insertDispute: db.prepare('INSERT OR IGNORE INTO team_disputes (dispute_id, target_id, team_id, author, reason, hlc_wall) VALUES (?, ?, ?, ?, ?, ?)'),
    get: db.prepare('SELECT bytes FROM team_shards WHERE id = ?').pluck(),
    // many ids in one statement: a sync push looks up thousands at a time
    getMany: db.prepare('SELECT id, bytes FROM team_shards WHERE id IN (SELECT value FROM json_each(?))').raw(),
    membership: db.prepare("SELECT bytes FROM team_shards WHERE team_id = ? AND kind = 'membership' ORDER BY hlc_wall, id").pluck(),
    index: db.prepare('SELECT hlc_wall AS timestamp, id FROM team_shards WHERE team_id = ? ORDER BY hlc_wall, id').raw(),
    count: db.prepare('SELECT count(*) FROM team_shards WHERE team_id = ?').pluck(),
    supersededBy: db.prepare('SELECT shard_id FROM team_supersedes WHERE superseded_id = ?').pluck(),
    disputes: db.prepare('SELECT dispute_id, author, reason, hlc_wall FROM team_disputes WHERE target_id = ? ORDER BY hlc_wall'),
    authorOf: db.prepare('SELECT author FROM team_shards WHERE id = ?').pluck(),
    setRecordId: db.prepare('UPDATE team_shards SET record_id = ? WHERE id = ?'),
    shardOfRecord: db.prepare('SELECT id FROM team_shards WHERE record_id = ? ORDER BY hlc_wall LIMIT 1').pluck()
  }

  const teamCache = new Map<string, TeamRow>()
  const toTeam = (row: { team_id: string, name: string, joined_at: number, team_only: number, bootstrap: string }): TeamRow => ({
    teamId: row.team_id, name: row.name, joinedAt: row.joined_at, teamOnly: row.team_only === 1, bootstrap: JSON.parse(row.bootstrap) as string[]
  })

  const insertMany = db.transaction((items: Array<{ shard: Shard, origin: string, dispute?: { target: string, reason: string } }>, also?: (fresh: Shard[]) => void): string[] => {
    const fresh: Shard[] = []
    const now = Date.now()
    for (const { shard, origin, dispute } of items) {
      const result = statements.insert.run(shard.id, shard.teamId, shard.author, shard.authorKey, shard.kind, shard.visibility, shard.hlc.wallMs, shard.hlc.counter, shard.bytes, now, origin)
      if (result.changes === 0) continue
      fresh.push(shard)
      for (const superseded of shard.supersedes) statements.insertSupersedes.run(shard.id, superseded)
      if (dispute != null) statements.insertDispute.run(shard.id, dispute.target, shard.teamId, shard.author, dispute.reason, shard.hlc.wallMs)
    }
    also?.(fresh)
    return fresh.map((s) => s.id)
  })

  return {
    putTeam: (team) => { statements.putTeam.run({ ...team, teamOnly: team.teamOnly ? 1 : 0, bootstrap: JSON.stringify(team.bootstrap) }); teamCache.delete(team.teamId) },
    teams: () => (statements.teams.all() as any[]).map(toTeam),
    team: (teamId) => {
      // asked on every shard validated; teams change rarely
      if (teamCache.has(teamId)) return teamCache.get(teamId)
      const row = statements.team.get(teamId) as any
      const team = row == null ? undefined : toTeam(row)
      if (team != null) teamCache.set(teamId, team)
      return team
    },
    setTeamOnly: (teamId, teamOnly) => { statements.setTeamOnly.run(teamOnly ? 1 : 0, teamId); teamCache.delete(teamId) },
    has: (id) => statements.has.get(id) != null,
    insert: (items, also) => insertMany(items, also),
    get: (id) => {
      const bytes = statements.get.get(id) as Uint8Array | undefined
      return bytes == null ? undefined : decodeShard(new Uint8Array(bytes), { verify: false })
    },
    getBytes: (ids) => {
      const out = new Map<string, Uint8Array>()
      if (ids.length === 0) return out
      // each row's blob is a fresh Buffer of its own: no copy needed
      for (const [id, bytes] of statements.getMany.all(JSON.stringify(ids)) as Array<[string, Uint8Array]>) out.set(id, bytes)
      return out
    },
    membershipShards: (teamId) => (statements.membership.all(teamId) as Uint8Array[]).map((b) => decodeShard(new Uint8Array(b), { verify: false })),
    index: (teamId) => (statements.index.all(teamId) as Array<[number, string]>).map(([timestamp, id]) => ({ timestamp, id })),
    count: (teamId) => statements.count.get(teamId) as number,
    supersededBy: (id) => statements.supersededBy.all(id) as string[],
    disputesOf: (id) => (statements.disputes.all(id) as Array<{ dispute_id: string, author: string, reason: string, hlc_wall: number }>).map((r) => ({ disputeId: r.dispute_id, author: r.author, reason: r.reason, at: r.hlc_wall })),
    authorOf: (id) => statements.authorOf.get(id) as string | undefined,
    setRecordId: (shardId, recordId) => { statements.setRecordId.run(recordId, shardId) },
    shardOfRecord: (recordId) => statements.shardOfRecord.get(recordId) as string | undefined
  }
}

export { compareHlc }
