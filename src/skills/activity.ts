import { createHash } from 'node:crypto'
import Database from 'better-sqlite3'
import { SkillError } from './errors.ts'
import { renderFrontMatter, type InputType, type SkillInput } from './front-matter.ts'

/**
 * Agent activity, reduced to its argument *shape*: key names and JSON types, never a value.
 * `{ branch: "main", force: true, files: ["a", "b"] }` has the shape
 * `{branch:string,files:string[],force:boolean}`. Keys that do not look like identifiers (they may
 * be data, e.g. an email address used as a key) collapse into `*`. Past depth 4, 64 keys or 64
 * array elements examined, the rest is not looked at. Only (kind, name, shape, time) is stored.
 */

export type ActivityKind = 'tool' | 'command'

export interface ActivityEvent {
  kind: ActivityKind
  /** The tool or command name: 1-128 characters of letters, digits and . _ : / @ - (no spaces: never a command line). */
  name: string
  arguments?: unknown
}

export interface Suggestion {
  kind: ActivityKind
  name: string
  shape: string
  count: number
  firstSeen: string
  lastSeen: string
  /** The proposed skill name and a SKILL.md draft (front matter valid for `skill publish`). */
  skill: string
  draft: string
}

export const ACTIVITY_NAME = /^[A-Za-z0-9_.:/@-]{1,128}$/
const IDENTIFIER_KEY = /^[A-Za-z_$][A-Za-z0-9_$-]{0,63}$/
const MAX_DEPTH = 4
const MAX_KEYS = 64
const MAX_ELEMENTS = 64
const DAY = 86_400_000

/** The shape of a JSON value as a canonical string; never includes a value. */
export function shapeOf (value: unknown, depth = 0): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string': return 'string'
    case 'boolean': return 'boolean'
    case 'number': return Number.isInteger(value) ? 'integer' : 'number'
    case 'object': break
    default: return 'unknown'
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]'
    if (depth >= MAX_DEPTH) return 'array'
    const elements = [...new Set(value.slice(0, MAX_ELEMENTS).map((v) => shapeOf(v, depth + 1)))].sort()
    return elements.length === 1 ? `${elements[0]}[]` : `(${elements.join('|')})[]`
  }
  if (depth >= MAX_DEPTH) return 'object'
  const fields = new Map<string, Set<string>>()
  for (const [key, v] of Object.entries(value as Record<string, unknown>).slice(0, MAX_KEYS)) {
    const name = IDENTIFIER_KEY.test(key) ? key : '*'
    const set = fields.get(name) ?? new Set<string>()
    set.add(shapeOf(v, depth + 1))
    fields.set(name, set)
  }
  const parts = [...fields.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([k, set]) => {
    const types = [...set].sort()
    return `${k}:${types.length === 1 ? types[0] : `(${types.join('|')})`}`
  })
  return `{${parts.join(',')}}`
}

function skillNameOf (name: string): string {
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 56).replace(/-+$/, '')
  return slug.length > 0 ? `${slug}-skill` : 'repeated-skill'
}

/** The top-level fields of an object shape `{a:T,b:U}` as draft inputs (nested types become json). */
function inputsOfShape (shape: string): SkillInput[] {
  if (!shape.startsWith('{') || shape === '{}') return []
  const fields: string[] = []
  let depth = 0
  let start = 1
  for (let i = 1; i < shape.length - 1; i++) {
    const c = shape[i]
    if (c === '{' || c === '(') depth++
    else if (c === '}' || c === ')') depth--
    else if (c === ',' && depth === 0) { fields.push(shape.slice(start, i)); start = i + 1 }
  }
  fields.push(shape.slice(start, shape.length - 1))
  const inputs: SkillInput[] = []
  for (const field of fields.slice(0, 32)) {
    const colon = field.indexOf(':')
    const name = field.slice(0, colon)
    const fieldShape = field.slice(colon + 1)
    if (!/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/.test(name)) continue
    const type: InputType = fieldShape === 'string' || fieldShape === 'integer' || fieldShape === 'number' || fieldShape === 'boolean' ? fieldShape : 'json'
    inputs.push({ name, type, required: true, description: `shape ${fieldShape.slice(0, 200)}` })
  }
  return inputs
}

function draftSkillMd (kind: ActivityKind, name: string, shape: string, count: number, first: number, last: number): { skill: string, draft: string } {
  const skill = skillNameOf(name)
  const inputs = inputsOfShape(shape)
  const front = renderFrontMatter({
    name: skill,
    version: '0.1.0',
    description: `Repeats the ${kind} ${name}, seen ${count} times with the same arguments`,
    runner: 'agent',
    entry: 'SKILL.md',
    inputs
  })
  const body = [
    '',
    `# ${skill}`,
    '',
    `Drafted by \`permagent skill suggest\`: the ${kind} \`${name}\` ran ${count} times between ${new Date(first).toISOString()} and ${new Date(last).toISOString()} with arguments of the shape \`${shape}\`.`,
    '',
    '## Steps',
    '',
    `1. Call \`${name}\` with ${inputs.length > 0 ? inputs.map((i) => `\`${i.name}\``).join(', ') : 'the same arguments'}.`,
    '2. Describe here what to check before and after, then publish: `permagent skill publish DIR --team ID`.',
    ''
  ].join('\n')
  return { skill, draft: front + body }
}

export interface ActivityLog {
  record: (event: ActivityEvent) => { shape: string }
  suggest: (options?: { minRepeats?: number, windowMs?: number, limit?: number }) => Suggestion[]
  close: () => void
}

export interface ActivityOptions {
  now?: () => number
  /** Rows older than this are deleted (default 30 days). */
  retentionMs?: number
  /** At most this many rows are kept (default 100,000). */
  maxRows?: number
}

export function checkActivityEvent (event: ActivityEvent): void {
  if (event.kind !== 'tool' && event.kind !== 'command') throw new SkillError('ERR_INVALID_INPUT', 'activity kind is tool or command')
  if (typeof event.name !== 'string' || !ACTIVITY_NAME.test(event.name)) throw new SkillError('ERR_INVALID_INPUT', 'a tool or command name is 1 to 128 characters of letters, digits and . _ : / @ - (a name, not a command line)')
}

/** The activity log in its own SQLite file; argument values never reach it. */
export function openActivityLog (file: string, options: ActivityOptions = {}): ActivityLog {
  const now = options.now ?? Date.now
  const retentionMs = options.retentionMs ?? 30 * DAY
  const maxRows = options.maxRows ?? 100_000
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.exec(`CREATE TABLE IF NOT EXISTS skill_activity (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    shape TEXT NOT NULL,
    shape_hash TEXT NOT NULL,
    at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS skill_activity_shape ON skill_activity (shape_hash, at);
  CREATE INDEX IF NOT EXISTS skill_activity_at ON skill_activity (at);`)
  const insert = db.prepare('INSERT INTO skill_activity (kind, name, shape, shape_hash, at) VALUES (?, ?, ?, ?, ?)')
  const prune = db.prepare('DELETE FROM skill_activity WHERE at < ? OR id <= (SELECT max(id) FROM skill_activity) - ?')
  const groups = db.prepare(`SELECT kind, name, shape, count(*) AS count, min(at) AS first, max(at) AS last
    FROM skill_activity WHERE at >= ? GROUP BY shape_hash HAVING count(*) >= ? ORDER BY count(*) DESC, max(at) DESC LIMIT ?`)
  let inserted = 0

  return {
    record (event) {
      checkActivityEvent(event)
      const shape = shapeOf(event.arguments ?? {})
      const hash = createHash('sha256').update(`${event.kind}\u0000${event.name}\u0000${shape}`).digest('hex')
      insert.run(event.kind, event.name, shape, hash, now())
      if (++inserted % 256 === 1) prune.run(now() - retentionMs, maxRows)
      return { shape }
    },
    suggest (suggestOptions = {}) {
      const minRepeats = suggestOptions.minRepeats ?? 2
      const windowMs = suggestOptions.windowMs ?? 7 * DAY
      if (!Number.isInteger(minRepeats) || minRepeats < 2 || minRepeats > 1_000_000) throw new SkillError('ERR_INVALID_INPUT', 'minRepeats is a whole number of at least 2')
      if (!Number.isFinite(windowMs) || windowMs <= 0 || windowMs > 365 * DAY) throw new SkillError('ERR_INVALID_INPUT', 'the window is between 1 ms and 365 days')
      const rows = groups.all(now() - windowMs, minRepeats, suggestOptions.limit ?? 20) as Array<{ kind: ActivityKind, name: string, shape: string, count: number, first: number, last: number }>
      return rows.map((row) => ({
        kind: row.kind,
        name: row.name,
        shape: row.shape,
        count: row.count,
        firstSeen: new Date(row.first).toISOString(),
        lastSeen: new Date(row.last).toISOString(),
        ...draftSkillMd(row.kind, row.name, row.shape, row.count, row.first, row.last)
      }))
    },
    close: () => { db.close() }
  }
}
