import Database from 'better-sqlite3'
import type { Database as SqliteDatabase } from 'better-sqlite3'

/**
 * How hard a returning write is pinned down.
 * - 'full' (default): synchronous=FULL; in WAL mode every commit fsyncs the WAL before it
 *   returns, so an acknowledged write survives kill -9, an OS crash and power loss.
 * - 'normal': synchronous=NORMAL; a commit is written to the WAL (the OS page cache) but fsynced
 *   only at checkpoints. That still survives kill -9 of the process (the kernel holds the data),
 *   but the last transactions can be lost on an OS crash or power cut.
 */
export type Durability = 'full' | 'normal'

export function openDatabase (file: string, durability: Durability): SqliteDatabase {
  const db = new Database(file)
  try {
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`)
    db.pragma('busy_timeout = 5000')
    db.pragma('temp_store = MEMORY')
    db.pragma('cache_size = -65536')
    db.pragma('mmap_size = 268435456')
  } catch (err) {
    db.close()
    throw err
  }
  return db
}
