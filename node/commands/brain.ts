import type { Command } from 'commander'
import { resolve } from 'node:path'
import type {
  BrainStats, Entity, ImportSummary, Memory, NeighborsResult, PathResult, RecallResult, RelateResult, RememberResult, Retraction, VerifyReport
} from '../../src/brain/index.ts'
import { connectToDaemon } from '../../src/client/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

const AXES = ['recorded', 'valid']

interface AsOfFlags { asOf?: string, axis?: string, validAt?: string }

function asOfBody (options: AsOfFlags): Record<string, string> {
  if (options.axis !== undefined && !AXES.includes(options.axis)) throw new UsageError(`--axis is recorded or valid, got "${options.axis}"`)
  if (options.axis !== undefined && options.asOf === undefined) throw new UsageError('--axis needs --as-of')
  const body: Record<string, string> = {}
  if (options.asOf !== undefined) body.asOf = options.asOf
  if (options.axis !== undefined) body.axis = options.axis
  if (options.validAt !== undefined) body.validAt = options.validAt
  return body
}

function withAsOf (command: Command): Command {
  return command
    .option('--as-of <time>', 'ISO 8601 time: what the brain knew then (see --axis)')
    .option('--axis <axis>', 'the axis of --as-of: recorded (default) or valid (what was true in the world then)')
    .option('--valid-at <time>', 'ISO 8601 time on the valid axis, combined with --as-of on the recorded axis')
}

function parseConfidence (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const number = Number(value)
  if (value.trim() === '' || !Number.isFinite(number) || number < 0 || number > 1) throw new UsageError(`--confidence must be a number from 0 to 1, got "${value}"`)
  return number
}

function short (id: string): string {
  return id.slice(0, 12)
}

function formatMemory (m: Memory): string {
  const state = m.retractedAt !== null ? ` retracted ${m.retractedAt}` : m.supersededAt !== null ? ` superseded ${m.supersededAt}` : ''
  return `v${m.version} ${short(m.id)} ${m.kind}${m.key !== null ? ` [${m.key}]` : ''} valid ${m.validFrom}${m.validEnd !== null ? `..${m.validEnd}` : ''} recorded ${m.recordedAt}${state}\n    ${m.content}`
}

function formatEntity (e: Entity): string {
  return `${e.name} (${e.type})${e.aliases.length > 0 ? ` aka ${e.aliases.join(', ')}` : ''}`
}

/** remember, recall, relate, alias, path, neighbors, forget, history, brain export/import/stats/verify */
export function register (program: Command, cli: CliContext): void {
  const daemon = async (command: Command): Promise<Awaited<ReturnType<typeof connectToDaemon>>> => await connectToDaemon(cli.paths(command).root)

  program.command('remember')
    .description('store a memory in the brain (a new version if --key already has one)')
    .argument('<text>', 'what to remember')
    .option('--key <key>', 'a stable key: remembering it again writes a new version that supersedes the old')
    .option('--kind <kind>', 'fact, preference, event, decision, rule, note (default), ...')
    .option('--topic <topic>', 'a topic to file it under')
    .option('--tag <tag>', 'a tag (repeatable)', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--visibility <visibility>', 'private (default), team, org or public')
    .option('--confidence <number>', 'from 0 to 1 (default 1)')
    .option('--valid-from <time>', 'when it became true (ISO 8601; default now)')
    .option('--valid-to <time>', 'when it stopped being true (ISO 8601)')
    .option('--team <team-id>', 'share with this team (visibility team or wider; default: the only team this node is in)')
    .option('--json', 'print JSON')
    .action(async (content: string, options: { key?: string, kind?: string, topic?: string, tag?: string[], visibility?: string, confidence?: string, validFrom?: string, validTo?: string, team?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<RememberResult & { shared: { teamId: string, shardId: string } | null, note?: string }>('POST', '/api/brain/remember', {
        content, key: options.key, kind: options.kind, topic: options.topic, tags: options.tag, visibility: options.visibility,
        confidence: parseConfidence(options.confidence), validFrom: options.validFrom, validTo: options.validTo, team: options.team
      })
      cli.print(command, result, () => {
        const head = result.created ? `remembered ${result.memory.id}` : `unchanged: ${result.memory.id} already says this`
        const version = result.memory.version > 1 ? ` (version ${result.memory.version}, supersedes ${short(result.memory.supersedes ?? '')})` : ''
        const duplicate = result.nearDuplicate !== null ? `\nnear-duplicate of ${result.nearDuplicate.id} (similarity ${result.nearDuplicate.similarity})` : ''
        const shared = result.shared != null ? `\nshared with team ${short(result.shared.teamId)} as shard ${short(result.shared.shardId)}` : result.note != null ? `\n${result.note}` : ''
        return head + version + duplicate + shared
      })
    })

  withAsOf(program.command('recall')
    .description('search the brain: full-text BM25 fused with fingerprints, ranked with recency and confidence')
    .argument('<query>', 'what to look for (plain words; no query syntax)')
    .option('--limit <n>', 'most hits (default 10)')
    .option('--kind <kind>', 'only this kind')
    .option('--topic <topic>', 'only this topic')
    .option('--visibility <visibility>', 'ceiling: only memories shareable at least this widely (team: team, org, public)')
    .option('--author <brain-id>', 'only memories by this brain')
    .option('--team <team-id>', 'recall from what this team shares, with provenance (author, time, disputes)')
    .option('--expand', 'also search with the rarest words of the best hits (finds related memories in other words; about twice the cost)'))
    .option('--json', 'print JSON')
    .action(async (query: string, options: AsOfFlags & { limit?: string, kind?: string, topic?: string, visibility?: string, author?: string, team?: string, expand?: boolean }, command: Command) => {
      const limit = options.limit !== undefined ? parseIntegerFlag('--limit', options.limit, 1, 1000) : undefined
      if (options.team !== undefined && (options.asOf !== undefined || options.validAt !== undefined)) throw new UsageError('--team recalls the current team view; --as-of applies to the local brain only')
      const client = await daemon(command)
      type Hit = RecallResult['hits'][number] & { time?: string, disputes?: Array<{ author: string, reason: string }> }
      const result = await client.call<{ hits: Hit[] }>('POST', '/api/brain/recall', {
        query, limit, kind: options.kind, topic: options.topic, visibility: options.visibility, author: options.author, team: options.team,
        expand: options.expand === true ? true : undefined, ...asOfBody(options)
      })
      cli.print(command, result, () => result.hits.length === 0
        ? 'no memories match'
        : result.hits.map((h) => `${h.score.toFixed(3)}  ${h.content}\n       ${short(h.id)} v${h.version}${h.key !== null ? ` [${h.key}]` : ''} ${h.kind} by ${short(h.author)}${h.time != null ? ` at ${h.time}` : ''}${h.signatureValid ? '' : ' SIGNATURE INVALID'}` +
          (h.disputes != null && h.disputes.length > 0 ? h.disputes.map((d) => `\n       disputed by ${short(d.author)}: ${d.reason}`).join('') : '')).join('\n'))
    })

  program.command('relate')
    .description('assert a typed relation: permagent relate Alice works_at Acme')
    .argument('<subject>', 'entity name or alias')
    .argument('<predicate>', 'a predicate of the ontology, e.g. works_at, knows, depends_on')
    .argument('<object>', 'entity name or alias')
    .option('--subject-type <type>', 'the subject\'s type (needed when it is new and the predicate does not imply it)')
    .option('--object-type <type>', 'the object\'s type (likewise)')
    .option('--confidence <number>', 'from 0 to 1 (default 1)')
    .option('--valid-from <time>', 'when it became true (ISO 8601; default now)')
    .option('--valid-to <time>', 'when it stopped being true')
    .option('--source-memory <id>', 'the memory this was learned from')
    .option('--json', 'print JSON')
    .action(async (subject: string, predicate: string, object: string, options: { subjectType?: string, objectType?: string, confidence?: string, validFrom?: string, validTo?: string, sourceMemory?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<RelateResult>('POST', '/api/brain/relate', {
        subject, predicate, object, subjectType: options.subjectType, objectType: options.objectType,
        confidence: parseConfidence(options.confidence), validFrom: options.validFrom, validTo: options.validTo, sourceMemory: options.sourceMemory
      })
      cli.print(command, result, () => `${result.created ? 'related' : 'unchanged'}: ${formatEntity(result.relation.subject)} ${result.relation.predicate} ${formatEntity(result.relation.object)} (${short(result.relation.id)})` +
        (result.superseded.length > 0 ? `\nsuperseded ${result.superseded.map(short).join(', ')}` : ''))
    })

  program.command('alias')
    .description('give an entity another name it can be found by')
    .argument('<entity>', 'entity name or alias')
    .argument('<alias>', 'the new name')
    .option('--json', 'print JSON')
    .action(async (entity: string, alias: string, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ entity: Entity }>('POST', '/api/brain/alias', { entity, alias })
      cli.print(command, result, () => formatEntity(result.entity))
    })

  withAsOf(program.command('path')
    .description('how does X relate to Y: the shortest relation paths between two entities')
    .argument('<from>', 'entity name or alias')
    .argument('<to>', 'entity name or alias')
    .option('--max-hops <n>', 'longest path considered (default 3)')
    .option('--limit <n>', 'most paths (default 5)'))
    .option('--json', 'print JSON')
    .action(async (from: string, to: string, options: AsOfFlags & { maxHops?: string, limit?: string }, command: Command) => {
      const maxHops = options.maxHops !== undefined ? parseIntegerFlag('--max-hops', options.maxHops, 1, 6) : undefined
      const limit = options.limit !== undefined ? parseIntegerFlag('--limit', options.limit, 1, 20) : undefined
      const client = await daemon(command)
      const result = await client.call<PathResult>('POST', '/api/brain/path', { from, to, maxHops, limit, ...asOfBody(options) })
      cli.print(command, result, () => result.paths.length === 0
        ? `no path from ${result.from.name} to ${result.to.name} within ${maxHops ?? 3} hops`
        : result.paths.map((p) => `${p.hops} hop${p.hops === 1 ? '' : 's'}: ` + p.steps.map((s) => `${s.subject} -${s.predicate}-> ${s.object}`).join(' ; ')).join('\n'))
    })

  withAsOf(program.command('neighbors')
    .description('entities within N hops of an entity')
    .argument('<entity>', 'entity name or alias')
    .option('--hops <n>', 'how far (default 1)')
    .option('--limit <n>', 'most entities (default 100)'))
    .option('--json', 'print JSON')
    .action(async (entity: string, options: AsOfFlags & { hops?: string, limit?: string }, command: Command) => {
      const hops = options.hops !== undefined ? parseIntegerFlag('--hops', options.hops, 1, 6) : undefined
      const limit = options.limit !== undefined ? parseIntegerFlag('--limit', options.limit, 1, 1000) : undefined
      const client = await daemon(command)
      const result = await client.call<NeighborsResult>('POST', '/api/brain/neighbors', { entity, hops, limit, ...asOfBody(options) })
      cli.print(command, result, () => result.neighbors.length === 0
        ? `${formatEntity(result.entity)} has no relations`
        : result.neighbors.map((n) => `${n.distance}  ${formatEntity(n.entity)}  via ${n.via.subject} -${n.via.predicate}-> ${n.via.object}`).join('\n'))
    })

  program.command('forget')
    .description('retract a memory (by id), every version of a key, or a relation (by id); history keeps it')
    .argument('<id-or-key>', 'memory id, key, or relation id')
    .option('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action(async (target: string, options: { reason?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ retractions: Retraction[] }>('POST', '/api/brain/forget', { target, reason: options.reason })
      cli.print(command, result, () => result.retractions.map((r) => `retracted ${r.targetType} ${r.target}`).join('\n'))
    })

  program.command('history')
    .description('every version of a memory (by id or key), with when it was valid and when it was known')
    .argument('<id-or-key>', 'memory id or key')
    .option('--json', 'print JSON')
    .action(async (target: string, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ versions: Memory[] }>('GET', `/api/brain/history/${encodeURIComponent(target)}`)
      cli.print(command, result, () => result.versions.map(formatMemory).join('\n'))
    })

  const brain = program.command('brain').description('the brain as a whole: export, import, stats, verify')

  brain.command('export')
    .description('write every record (signed) to a JSON Lines file')
    .argument('<file>', 'the file to write')
    .option('--json', 'print JSON')
    .action(async (file: string, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ file: string, lines: number }>('POST', '/api/brain/export', { file: resolve(file) }, { timeoutMs: 600_000 })
      cli.print(command, result, () => `wrote ${result.lines} lines to ${result.file}`)
    })

  brain.command('import')
    .description('import a JSON Lines file: exported records (signatures verified) or plain {"content", "key"?, "kind"?, "topic"?, "visibility"?, "valid_from"?} lines')
    .argument('<file>', 'the file to read')
    .option('--json', 'print JSON')
    .action(async (file: string, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<ImportSummary>('POST', '/api/brain/import', { file: resolve(file) }, { timeoutMs: 3_600_000 })
      cli.print(command, result, () => `imported ${result.memories} memories, ${result.relations} relations, ${result.entities} entities, ${result.retractions} retractions from ${result.lines} lines (${result.skipped} already present)`)
    })

  brain.command('stats')
    .description('counts, chain head and database size')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const client = await daemon(command)
      const s = await client.call<BrainStats>('GET', '/api/brain/stats')
      cli.print(command, s, () => [
        `brain id:   ${s.brainId}`,
        `memories:   ${s.memories.current} current, ${s.memories.superseded} superseded, ${s.memories.retracted} retracted (${s.memories.total} records)`,
        `by kind:    ${Object.entries(s.memories.byKind).map(([k, n]) => `${k} ${n}`).join(', ') || '-'}`,
        `graph:      ${s.entities} entities, ${s.aliases} names, ${s.relations.current} current relations (${s.relations.total} records)`,
        `log:        ${s.logEntries} entries, head ${s.head ?? '-'}`,
        `database:   ${(s.dbBytes / 1e6).toFixed(1)} MB`
      ].join('\n'))
    })

  brain.command('verify')
    .description('walk the hash chain and report rows edited, deleted or added behind the engine\'s back')
    .option('--signatures', 'also check every Ed25519 signature (slower)')
    .option('--json', 'print JSON')
    .action(async (options: { signatures?: boolean }, command: Command) => {
      const client = await daemon(command)
      const report = await client.call<VerifyReport>('POST', '/api/brain/verify', { signatures: options.signatures === true }, { timeoutMs: 600_000 })
      cli.print(command, report, () => report.ok
        ? `ok: ${report.entries} log entries, head ${report.head ?? '-'}`
        : `FAILED: ${report.problems.length} problem(s)\n` + report.problems.map((p) => `${p.kind} ${p.table}${p.seq !== null ? ` #${p.seq}` : ''}: ${p.detail}`).join('\n'))
      if (!report.ok) process.exitCode = 1
    })
}
