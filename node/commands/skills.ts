import type { Command } from 'commander'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { connectToDaemon } from '../../src/client/index.ts'
import type { InstalledSkill, InstallResult, PublishResult, SkillDetails, SkillListing, SkillSummary, Suggestion, UpgradeResult, YankResult } from '../../src/skills/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

/** Install and upgrade wait for peers; the daemon bounds them at 150 s. */
const FETCHING_TIMEOUT_MS = 160_000

function short (id: string): string {
  return id.slice(0, 12)
}

function formatSkill (s: SkillSummary): string {
  const flags = [
    s.status === 'yanked' ? `YANKED${s.yankReason != null ? ` (${s.yankReason})` : ''}` : '',
    s.status === 'equivocated' ? `EQUIVOCATED: refused (also ${s.conflicts.map(short).join(', ')})` : '',
    s.installed ? 'installed' : ''
  ].filter((f) => f !== '')
  return `${s.name}@${s.version}  ${s.description}\n    by ${short(s.author)}  bundle ${short(s.bundle)}  ${s.size} bytes  ${s.publishedAt}${flags.length > 0 ? `  [${flags.join(', ')}]` : ''}`
}

function formatListing (listing: SkillListing): string {
  const lines: string[] = []
  lines.push(listing.skills.length === 0 ? 'no skills are published in your teams' : listing.skills.map(formatSkill).join('\n'))
  for (const e of listing.equivocations) {
    lines.push(`warning: equivocation: author ${e.author} published ${e.bundles.length} different bundles as ${e.name}@${e.version} (${e.bundles.map(short).join(', ')}); all are refused`)
  }
  if (listing.installed.length > 0) {
    lines.push('', 'installed:')
    for (const i of listing.installed) lines.push(`  ${i.name}@${i.version}  ${i.path}${i.status !== 'available' ? `  [${i.status}]` : ''}`)
  }
  return lines.join('\n')
}

function formatDetails (d: SkillDetails, versions: SkillSummary[], installed?: InstalledSkill): string {
  const lines = [
    `${d.name}@${d.version}  (${d.status})`,
    `  ${d.description}`,
    `  author   ${d.author}`,
    `  bundle   ${d.bundle} (${d.size} bytes, ${d.files.length} files)`,
    `  runner   ${d.runner}, entry ${d.entry}`,
    `  teams    ${d.teams.join(', ')}`,
    `  inputs   ${d.inputs.length === 0 ? 'none' : d.inputs.map((i) => `${i.name}: ${i.type}${i.required ? '' : '?'}`).join(', ')}`,
    '  files'
  ]
  for (const f of d.files) lines.push(`    ${f.executable ? 'x' : '-'} ${String(f.size).padStart(8)}  ${short(f.sha256)}  ${f.path}`)
  if (d.conflicts.length > 0) lines.push(`  EQUIVOCATION: the author also published ${d.conflicts.join(', ')} as this version; all are refused`)
  if (versions.length > 1) lines.push(`  versions ${versions.map((v) => `${v.version}${v.status !== 'available' ? ` (${v.status})` : ''}`).join(', ')}`)
  lines.push(installed != null ? `  installed ${installed.version} at ${installed.path}` : '  not installed')
  return lines.join('\n')
}

/** skill publish, list, show, install, upgrade, remove, yank, suggest */
export function register (program: Command, cli: CliContext): void {
  const daemon = async (command: Command): Promise<Awaited<ReturnType<typeof connectToDaemon>>> => await connectToDaemon(cli.paths(command).root)
  const skill = program.command('skill').alias('skills').description('signed skills on your teams: publish, install, yank; suggestions from repeated work')

  skill.command('publish')
    .description('pack a skill directory (SKILL.md + files), sign it and announce it on a team')
    .argument('<dir>', 'the skill directory')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--json', 'print JSON')
    .action(async (dir: string, options: { team?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<PublishResult>('POST', '/api/skills/publish', { dir: resolve(dir), team: options.team })
      cli.print(command, result, () => `${result.alreadyPublished ? 'already published' : 'published'} ${result.name}@${result.version} on team ${result.teamId}\nbundle ${result.bundle} (${result.files} files, ${result.size} bytes)`)
    })

  skill.command('list')
    .description('skills published in your teams, with yanked and equivocated versions marked, and what is installed')
    .option('--team <team-id>', 'only this team')
    .option('--json', 'print JSON')
    .action(async (options: { team?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<SkillListing>('GET', `/api/skills/list${options.team != null ? `?team=${encodeURIComponent(options.team)}` : ''}`)
      cli.print(command, result, () => formatListing(result))
    })

  skill.command('show')
    .description('a skill\'s manifest: author, files and hashes, inputs, versions')
    .argument('<name[@version]>', 'the skill')
    .option('--team <team-id>', 'only this team')
    .option('--author <brain-id>', 'the author, when several publish the name')
    .option('--json', 'print JSON')
    .action(async (spec: string, options: { team?: string, author?: string }, command: Command) => {
      const client = await daemon(command)
      const query = new URLSearchParams({ spec })
      if (options.team != null) query.set('team', options.team)
      if (options.author != null) query.set('author', options.author)
      const result = await client.call<{ selected: SkillDetails, versions: SkillSummary[], installed?: InstalledSkill }>('GET', `/api/skills/show?${query.toString()}`)
      cli.print(command, result, () => formatDetails(result.selected, result.versions, result.installed))
    })

  skill.command('install')
    .description('fetch, verify (signature, every file hash, the author\'s membership, your trust policy) and install a skill')
    .argument('<name[@version]>', 'the skill (default: its newest version that is not yanked)')
    .option('--team <team-id>', 'only from this team')
    .option('--author <brain-id>', 'the author, when several publish the name')
    .option('--allow-yanked', 'install a version its author yanked')
    .option('--json', 'print JSON')
    .action(async (spec: string, options: { team?: string, author?: string, allowYanked?: boolean }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<InstallResult>('POST', '/api/skills/install', { spec, team: options.team, author: options.author, allowYanked: options.allowYanked === true }, { timeoutMs: FETCHING_TIMEOUT_MS })
      cli.print(command, result, () => result.alreadyInstalled
        ? `${result.name}@${result.version} is already installed at ${result.path}`
        : `installed ${result.name}@${result.version} at ${result.path}${result.yanked ? ' (a YANKED version)' : ''}\nby ${result.author}, bundle ${result.bundle}, from ${result.source}`)
    })

  skill.command('upgrade')
    .description('install the newest version (same author, not yanked) of one or every installed skill')
    .argument('[name]', 'one skill (default: all)')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ results: UpgradeResult[] }>('POST', '/api/skills/upgrade', { name }, { timeoutMs: FETCHING_TIMEOUT_MS })
      cli.print(command, result, () => result.results.length === 0
        ? 'no skills are installed'
        : result.results.map((r) => r.error != null ? `${r.name}: ${r.error.message}` : r.upgraded ? `${r.name}: ${r.from} -> ${r.to ?? ''}` : `${r.name}: ${r.from} is the newest`).join('\n'))
      if (result.results.some((r) => r.error != null)) process.exitCode = 1
    })

  skill.command('remove')
    .description('uninstall a skill')
    .argument('<name>', 'the skill')
    .option('--json', 'print JSON')
    .action(async (name: string, _options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ name: string, version: string }>('POST', '/api/skills/remove', { name })
      cli.print(command, result, () => `removed ${result.name}@${result.version}`)
    })

  skill.command('yank')
    .description('withdraw a version you published (a signed yank every member sees; it is no longer installed by default)')
    .argument('<name@version>', 'the version')
    .option('--team <team-id>', 'only in this team (default: every team that carries it)')
    .option('--reason <text>', 'why, shown to members')
    .option('--json', 'print JSON')
    .action(async (spec: string, options: { team?: string, reason?: string }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<YankResult>('POST', '/api/skills/yank', { spec, team: options.team, reason: options.reason })
      cli.print(command, result, () => result.teams.length === 0 ? `${result.name}@${result.version} was already yanked` : `yanked ${result.name}@${result.version} in ${result.teams.join(', ')}`)
    })

  skill.command('suggest')
    .description('propose skills for work that repeats (the same tool and argument shape, by default twice in 7 days)')
    .option('--min-repeats <n>', 'how many repeats make a pattern (default 2)')
    .option('--days <n>', 'the window in days (default 7)')
    .option('--write <dir>', 'write each draft to <dir>/<skill>/SKILL.md')
    .option('--json', 'print JSON')
    .action(async (options: { minRepeats?: string, days?: string, write?: string }, command: Command) => {
      const query = new URLSearchParams()
      if (options.minRepeats != null) query.set('minRepeats', String(parseIntegerFlag('--min-repeats', options.minRepeats, 2, 1_000_000)))
      if (options.days != null) query.set('days', String(parseIntegerFlag('--days', options.days, 1, 365)))
      const client = await daemon(command)
      const result = await client.call<{ suggestions: Suggestion[] }>('GET', `/api/skills/suggest?${query.toString()}`)
      const written: string[] = []
      if (options.write != null) {
        for (const s of result.suggestions) {
          const dir = join(resolve(options.write), s.skill)
          await mkdir(dir, { recursive: true })
          try {
            await writeFile(join(dir, 'SKILL.md'), s.draft, { flag: 'wx' })
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${join(dir, 'SKILL.md')} exists; not overwriting it`)
            throw err
          }
          written.push(join(dir, 'SKILL.md'))
        }
      }
      cli.print(command, { ...result, written }, () => result.suggestions.length === 0
        ? 'nothing repeats yet'
        : result.suggestions.map((s) => `${s.skill}: the ${s.kind} ${s.name} ran ${s.count} times (${s.firstSeen} .. ${s.lastSeen}) with arguments ${s.shape}\n${written.length > 0 ? '' : `\n${s.draft}`}`).join('\n') +
          (written.length > 0 ? `\nwrote ${written.join(', ')}` : ''))
    })
}
