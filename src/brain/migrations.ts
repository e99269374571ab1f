import type { Database } from 'better-sqlite3'
import { SchemaVersionError } from './errors.ts'

/**
 * Forward-only schema migrations. Each runs once, in its own transaction, and bumps
 * PRAGMA user_version; never edit a released migration, append a new one.
 */
interface Migration {
  version: number
  description: string
  sql: string
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    description: 'memories, retractions, entities, aliases, relations, full-text and fingerprint indexes, audit log',
    sql: `
      CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

      -- public keys of every author whose records this brain holds (itself, importers, team members)
      CREATE TABLE authors (id TEXT PRIMARY KEY, public_key BLOB NOT NULL) WITHOUT ROWID;

      -- Signed fields (the canonical record) first, then local metadata, then columns the engine
      -- derives from later records (superseded_*, valid_end, retracted_at), which verify() re-derives.
      CREATE TABLE memories (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        author TEXT NOT NULL,
        key TEXT,
        content TEXT NOT NULL,
        kind TEXT NOT NULL,
        topic TEXT,
        tags TEXT NOT NULL,
        visibility INTEGER NOT NULL,
        confidence INTEGER NOT NULL,
        valid_from INTEGER NOT NULL,
        valid_to INTEGER,
        created_at INTEGER NOT NULL,
        supersedes TEXT,
        version INTEGER NOT NULL,
        signature BLOB NOT NULL,
        source TEXT NOT NULL,
        team_id TEXT,
        recorded_at INTEGER NOT NULL,
        duplicate_of TEXT,
        fingerprint BLOB NOT NULL,
        superseded_by TEXT,
        superseded_at INTEGER,
        valid_end INTEGER,
        retracted_at INTEGER
      );
      CREATE INDEX memories_key ON memories (author, key) WHERE key IS NOT NULL;
      CREATE INDEX memories_supersedes ON memories (supersedes) WHERE supersedes IS NOT NULL;

      -- stemmed terms of content and of key/topic/tags; contentless: the text lives in memories
      CREATE VIRTUAL TABLE memories_fts USING fts5 (terms, meta, content = '', tokenize = 'unicode61 remove_diacritics 0');
      CREATE VIRTUAL TABLE memories_vocab USING fts5vocab (memories_fts, row);

      -- LSH bands of each memory's MinHash signature: near-duplicate candidates
      CREATE TABLE fingerprint_bands (band INTEGER NOT NULL, memory INTEGER NOT NULL, PRIMARY KEY (band, memory)) WITHOUT ROWID;

      CREATE TABLE retractions (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        author TEXT NOT NULL,
        target TEXT NOT NULL,
        target_type TEXT NOT NULL,
        reason TEXT,
        created_at INTEGER NOT NULL,
        signature BLOB NOT NULL,
        source TEXT NOT NULL,
        team_id TEXT,
        recorded_at INTEGER NOT NULL
      );
      CREATE INDEX retractions_target ON retractions (target);

      CREATE TABLE entities (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        recorded_at INTEGER NOT NULL
      );

      -- every name an entity goes by, its canonical name included
      CREATE TABLE aliases (
        seq INTEGER PRIMARY KEY,
        entity INTEGER NOT NULL,
        alias TEXT NOT NULL,
        folded TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (entity, alias)
      );
      CREATE INDEX aliases_alias ON aliases (alias);
      CREATE INDEX aliases_folded ON aliases (folded);
      CREATE VIRTUAL TABLE alias_trigrams USING fts5 (folded, content = '', tokenize = 'trigram');

      CREATE TABLE relations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        author TEXT NOT NULL,
        subject INTEGER NOT NULL,
        predicate TEXT NOT NULL,
        object INTEGER NOT NULL,
        confidence INTEGER NOT NULL,
        valid_from INTEGER NOT NULL,
        valid_to INTEGER,
        created_at INTEGER NOT NULL,
        source_memory TEXT,
        signature BLOB NOT NULL,
        source TEXT NOT NULL,
        team_id TEXT,
        recorded_at INTEGER NOT NULL,
        superseded_by TEXT,
        superseded_at INTEGER,
        valid_end INTEGER,
        retracted_at INTEGER
      );
      CREATE INDEX relations_subject ON relations (subject, predicate);
      CREATE INDEX relations_object ON relations (object);

      -- The append-only log: one entry per record written, each hash chained to the previous.
      CREATE TABLE log (
        seq INTEGER PRIMARY KEY,
        op INTEGER NOT NULL,
        ref INTEGER NOT NULL,
        digest BLOB NOT NULL,
        at INTEGER NOT NULL,
        hash BLOB NOT NULL
      );
    `
  }
]

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version

/** Brings the database to SCHEMA_VERSION; refuses one written by a newer version. */
export function migrate (db: Database): number {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > SCHEMA_VERSION) throw new SchemaVersionError(current, SCHEMA_VERSION)
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue
    db.transaction(() => {
      db.exec(migration.sql)
      db.pragma(`user_version = ${migration.version}`)
    })()
  }
  return SCHEMA_VERSION
}
