import { statSync } from 'node:fs'
import { formatHead } from './chain.ts'
import type { BrainContext } from './context.ts'
import { SCHEMA_VERSION } from './migrations.ts'
import { VISIBILITIES, type BrainStats } from './types.ts'

export function createStats (ctx: BrainContext, file: string): () => BrainStats {
  const { db } = ctx
  const memoryCounts = db.prepare<[], { total: number, current: number, superseded: number, retracted: number }>(`SELECT count(*) AS total,
    count(*) FILTER (WHERE superseded_by IS NULL AND retracted_at IS NULL) AS current,
    count(*) FILTER (WHERE superseded_by IS NOT NULL) AS superseded,
    count(*) FILTER (WHERE retracted_at IS NOT NULL) AS retracted FROM memories`)
  const byKind = db.prepare<[], { name: string, n: number }>('SELECT kind AS name, count(*) AS n FROM memories WHERE superseded_by IS NULL AND retracted_at IS NULL GROUP BY kind')
  const byVisibility = db.prepare<[], { name: number, n: number }>('SELECT visibility AS name, count(*) AS n FROM memories WHERE superseded_by IS NULL AND retracted_at IS NULL GROUP BY visibility')
  const bySource = db.prepare<[], { name: string, n: number }>('SELECT source AS name, count(*) AS n FROM memories WHERE superseded_by IS NULL AND retracted_at IS NULL GROUP BY source')
  const relationCounts = db.prepare<[], { total: number, current: number }>(`SELECT count(*) AS total,
    count(*) FILTER (WHERE superseded_by IS NULL AND retracted_at IS NULL) AS current FROM relations`)
  const entityCount = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM entities')
  const aliasCount = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM aliases')
  const logCount = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM log')

  const fileBytes = (path: string): number => {
    try { return statSync(path).size } catch { return 0 }
  }

  return () => {
    const head = ctx.chain.head()
    return {
      brainId: ctx.identity.brainId,
      schemaVersion: SCHEMA_VERSION,
      memories: {
        ...(memoryCounts.get() as { total: number, current: number, superseded: number, retracted: number }),
        byKind: Object.fromEntries(byKind.all().map((r) => [r.name, r.n])),
        byVisibility: Object.fromEntries(byVisibility.all().map((r) => [VISIBILITIES[r.name], r.n])),
        bySource: Object.fromEntries(bySource.all().map((r) => [r.name, r.n]))
      },
      entities: entityCount.get()?.n ?? 0,
      aliases: aliasCount.get()?.n ?? 0,
      relations: relationCounts.get() as { total: number, current: number },
      logEntries: logCount.get()?.n ?? 0,
      head: head.seq === 0 ? null : formatHead(head),
      dbBytes: file === ':memory:' ? 0 : fileBytes(file) + fileBytes(file + '-wal')
    }
  }
}
