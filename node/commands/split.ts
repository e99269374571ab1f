import type { Command } from 'commander'
import { connectToDaemon } from '../../src/client/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

interface Serving {
  model: string
  layers: { start: number, end: number }
  team: string | null
  stats: { sessions: number }
  auto?: { reason: string, memoryBytes: number } | null
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/i
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }

/** A memory size like 16GB, 512MiB or 2000000 (bytes). */
export function parseSize (flag: string, value: string): number {
  const match = SIZE.exec(value.trim())
  if (match == null) throw new UsageError(`${flag} takes a size like 16GB, 512MiB or a number of bytes, got "${value}"`)
  const bytes = Math.floor(Number(match[1]) * SIZE_UNITS[(match[2] ?? 'b').toLowerCase()])
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new UsageError(`${flag} must be at least one byte and at most 2^53, got "${value}"`)
  return bytes
}

/** A span like "2-5": layers 2, 3 and 4 (end exclusive). */
export function parseLayerSpan (value: string): { start: number, end: number } {
  const match = /^(\d+)-(\d+)$/.exec(value.trim())
  if (match == null) throw new UsageError(`--layers takes a span like 2-5 (layers 2 to 4; the end is exclusive), got "${value}"`)
  const start = Number(match[1])
  const end = Number(match[2])
  if (end <= start) throw new UsageError(`--layers ${value} is empty: the end must be after the start`)
  return { start, end }
}

/** serve: the running node serves a span of a stored model's layers to its peers. */
export function register (program: Command, cli: CliContext): void {
  program.command('serve')
    .description('serve a span of a stored model\'s layers to peers for split inference (the running node)')
    .argument('[model]', 'stored model name (see permagent model list)')
    .option('--layers <span>', 'layers to serve, e.g. 1-3 (never layer 0 or the last: clients keep those), or auto: the span the pool lacks most that fits --memory')
    .option('--memory <size>', 'with --layers auto: memory to give the span, e.g. 8GB (default: free memory now)')
    .option('--max-layers <n>', 'with --layers auto: serve at most n layers')
    .option('--team <team-id>', 'take sessions only from current members of this team')
    .option('--max-sessions <n>', 'sessions held at once')
    .option('--max-length <n>', 'positions one session may reach')
    .option('--threads <n>', 'onnxruntime threads')
    .option('--stop', 'stop serving')
    .option('--json', 'print JSON')
    .action(async (model: string | undefined, options: { layers?: string, memory?: string, maxLayers?: string, team?: string, maxSessions?: string, maxLength?: string, threads?: string, stop?: boolean }, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      if (options.stop === true) {
        const result = await client.call<{ stopped: boolean }>('POST', '/api/serve/stop')
        cli.print(command, result, () => result.stopped ? 'stopped serving' : 'was not serving')
        return
      }
      if (model == null) {
        const result = await client.call<{ serving: Serving | null }>('GET', '/api/serve')
        cli.print(command, result, () => result.serving == null ? 'not serving' : `serving ${result.serving.model} layers ${result.serving.layers.start}-${result.serving.layers.end}${result.serving.team != null ? ` to team ${result.serving.team.slice(0, 12)}…` : ''} (${result.serving.stats.sessions} sessions)`)
        return
      }
      if (options.layers == null) throw new UsageError('give --layers, e.g. --layers 1-3 or --layers auto')
      const auto = options.layers.trim() === 'auto'
      if (!auto && (options.memory != null || options.maxLayers != null)) throw new UsageError('--memory and --max-layers go with --layers auto')
      if (options.team != null && !/^[0-9a-f]{64}$/.test(options.team)) throw new UsageError('--team takes a team id (64 hex characters; see permagent team list)')
      const span = auto ? null : parseLayerSpan(options.layers)
      const result = await client.call<Serving>('POST', '/api/serve', {
        model,
        ...(span != null ? { start: span.start, end: span.end } : { auto: true }),
        memoryBytes: options.memory != null ? parseSize('--memory', options.memory) : undefined,
        maxLayers: options.maxLayers != null ? parseIntegerFlag('--max-layers', options.maxLayers, 1, 100_000) : undefined,
        team: options.team,
        maxSessions: options.maxSessions != null ? parseIntegerFlag('--max-sessions', options.maxSessions, 1, 1024) : undefined,
        maxLength: options.maxLength != null ? parseIntegerFlag('--max-length', options.maxLength, 1, 1 << 24) : undefined,
        threads: options.threads != null ? parseIntegerFlag('--threads', options.threads, 1, 256) : undefined
      }, { timeoutMs: 300_000 })
      cli.print(command, result, () => [
        `serving ${result.model} layers ${result.layers.start}-${result.layers.end} on /permagent/infer/1.0.0${result.team != null ? `, to members of team ${result.team.slice(0, 12)}… only` : ''}; announced on the DHT`,
        ...(result.auto != null ? [`auto: ${result.auto.reason}`] : [])
      ].join('\n'))
    })
}
