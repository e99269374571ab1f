import type { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { connectToDaemon } from '../../src/client/index.ts'
import type { MemberInfo } from '../../src/team/index.ts'
import type { CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

interface TeamSummary { teamId: string, name: string, members: number, teamOnly: boolean, joinedAt: string, shards: number }

const DURATION = /^(\d+)(m|h|d)$/

function parseDuration (flag: string, value: string): number {
  const match = DURATION.exec(value.trim())
  if (match == null) throw new UsageError(`${flag} takes a duration like 30m, 12h or 7d, got "${value}"`)
  return Number(match[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'm' | 'h' | 'd']
}

/** team create, invite, join, list, members, remove, dispute, team-only */
export function register (program: Command, cli: CliContext): void {
  const daemon = async (command: Command): Promise<Awaited<ReturnType<typeof connectToDaemon>>> => await connectToDaemon(cli.paths(command).root)
  // --team is optional where this node is in exactly one team
  const resolveTeam = async (client: Awaited<ReturnType<typeof connectToDaemon>>, team: string | undefined): Promise<string> => {
    if (team != null) return team
    const { teams } = await client.call<{ teams: TeamSummary[] }>('GET', '/api/team/list')
    if (teams.length === 1) return teams[0].teamId
    if (teams.length === 0) throw new UsageError('this node is in no team yet: `permagent team create NAME` or `permagent team join TOKEN`')
    throw new UsageError(`this node is in ${teams.length} teams; say which with --team (${teams.map((t) => `${t.name}: ${t.teamId}`).join(', ')})`)
  }

  const team = program.command('team').description('share memory with a team: create, invite, join, members')

  team.command('create')
    .description('create a team with this node as its first admin')
    .argument('<name>', 'the team\'s name')
    .option('--team-only', 'admit connections from team members only')
    .option('--json', 'print JSON')
    .action(async (name: string, options: { teamOnly?: boolean }, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ teamId: string, name: string }>('POST', '/api/team/create', { name, teamOnly: options.teamOnly === true })
      cli.print(command, result, () => `created team "${result.name}"\nteam id: ${result.teamId}\ninvite someone: permagent team invite --team ${result.teamId}`)
    })

  team.command('invite')
    .description('print a one-time invite token for a new member')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--role <role>', 'member (default) or admin')
    .option('--expires <duration>', 'how long the token is valid, e.g. 30m, 12h, 7d (default 7d)')
    .option('--bootstrap <multiaddr>', 'an address the new member should dial (repeatable; default: this node\'s addresses)', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--json', 'print JSON')
    .action(async (options: { team?: string, role?: string, expires?: string, bootstrap?: string[] }, command: Command) => {
      if (options.role != null && options.role !== 'member' && options.role !== 'admin') throw new UsageError(`--role is member or admin, got "${options.role}"`)
      const expiresInMs = options.expires != null ? parseDuration('--expires', options.expires) : undefined
      const client = await daemon(command)
      const teamId = await resolveTeam(client, options.team)
      const result = await client.call<{ token: string, expiresAt: string }>('POST', '/api/team/invite', { team: teamId, role: options.role, expiresInMs, bootstrap: options.bootstrap })
      cli.print(command, result, () => `${result.token}\n(valid until ${result.expiresAt}, once; the new member runs: permagent team join <token>)`)
    })

  team.command('join')
    .description('join a team with an invite token (or --token-file FILE)')
    .argument('[token]', 'the invite token')
    .option('--token-file <file>', 'read the token from a file')
    .option('--json', 'print JSON')
    .action(async (token: string | undefined, options: { tokenFile?: string }, command: Command) => {
      const text = token ?? (options.tokenFile != null ? await readFile(options.tokenFile, 'utf8') : undefined)
      if (text == null || text.trim() === '') throw new UsageError('give the invite token as an argument or with --token-file')
      const client = await daemon(command)
      const result = await client.call<{ teamId: string, name: string }>('POST', '/api/team/join', { token: text.trim() })
      cli.print(command, result, () => `joined team "${result.name}" (${result.teamId})`)
    })

  team.command('list')
    .description('teams this node is in')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const client = await daemon(command)
      const result = await client.call<{ teams: TeamSummary[] }>('GET', '/api/team/list')
      cli.print(command, result, () => result.teams.length === 0
        ? 'this node is in no team'
        : result.teams.map((t) => `${t.teamId}  ${t.name}  ${t.members} members, ${t.shards} shards${t.teamOnly ? ', team-only' : ''}`).join('\n'))
    })

  team.command('members')
    .description('the members of a team')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--json', 'print JSON')
    .action(async (options: { team?: string }, command: Command) => {
      const client = await daemon(command)
      const teamId = await resolveTeam(client, options.team)
      const result = await client.call<{ members: MemberInfo[] }>('GET', `/api/team/${teamId}/members`)
      cli.print(command, result, () => result.members.map((m) => `${m.brainId}  ${m.role.padEnd(6)} ${m.active ? `since ${m.since}` : 'removed'}`).join('\n'))
    })

  team.command('remove')
    .description('remove a member (admins; anyone may remove themselves)')
    .argument('<member>', 'the member\'s brain id or public key')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--json', 'print JSON')
    .action(async (member: string, options: { team?: string }, command: Command) => {
      const client = await daemon(command)
      const teamId = await resolveTeam(client, options.team)
      const result = await client.call<{ removed: string }>('POST', '/api/team/remove', { team: teamId, member })
      cli.print(command, result, () => `removed ${result.removed} from ${teamId}`)
    })

  team.command('dispute')
    .description('dispute a shared fact (by its shard id), with a reason every member sees')
    .argument('<shard-id>', 'the shard to dispute')
    .requiredOption('--reason <text>', 'why it is wrong')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--json', 'print JSON')
    .action(async (shard: string, options: { reason: string, team?: string }, command: Command) => {
      const client = await daemon(command)
      const teamId = await resolveTeam(client, options.team)
      const result = await client.call<{ disputeId: string }>('POST', '/api/team/dispute', { team: teamId, shard, reason: options.reason })
      cli.print(command, result, () => `disputed ${shard} (dispute ${result.disputeId})`)
    })

  team.command('team-only')
    .description('admit connections from team members only (on) or from anyone (off)')
    .argument('<on|off>', 'on or off')
    .option('--team <team-id>', 'the team (default: the only one)')
    .option('--json', 'print JSON')
    .action(async (value: string, options: { team?: string }, command: Command) => {
      if (value !== 'on' && value !== 'off') throw new UsageError(`team-only takes on or off, got "${value}"`)
      const client = await daemon(command)
      const teamId = await resolveTeam(client, options.team)
      const result = await client.call<{ teamOnly: boolean }>('POST', '/api/team/team-only', { team: teamId, teamOnly: value === 'on' })
      cli.print(command, result, () => `team-only ${result.teamOnly ? 'on' : 'off'} for ${teamId}`)
    })
}
