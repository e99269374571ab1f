import type { Command } from 'commander'
import { connectToDaemon } from '../../src/client/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

interface Serving { model: string, layers: { start: number, end: number }, stats: { sessions: number } }

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
    .option('--layers <span>', 'layers to serve, e.g. 1-3 (never layer 0 or the last: clients keep those)')
    .option('--max-sessions <n>', 'sessions held at once')
    .option('--threads <n>', 'onnxruntime threads')
    .option('--stop', 'stop serving')
    .option('--json', 'print JSON')
    .action(async (model: string | undefined, options: { layers?: string, maxSessions?: string, threads?: string, stop?: boolean }, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      if (options.stop === true) {
        const result = await client.call<{ stopped: boolean }>('POST', '/api/serve/stop')
        cli.print(command, result, () => result.stopped ? 'stopped serving' : 'was not serving')
        return
      }
      if (model == null) {
        const result = await client.call<{ serving: Serving | null }>('GET', '/api/serve')
        cli.print(command, result, () => result.serving == null ? 'not serving' : `serving ${result.serving.model} layers ${result.serving.layers.start}-${result.serving.layers.end} (${result.serving.stats.sessions} sessions)`)
        return
      }
      if (options.layers == null) throw new UsageError('give --layers, e.g. --layers 1-3')
      const span = parseLayerSpan(options.layers)
      const result = await client.call<Serving>('POST', '/api/serve', {
        model,
        start: span.start,
        end: span.end,
        maxSessions: options.maxSessions != null ? parseIntegerFlag('--max-sessions', options.maxSessions, 1, 1024) : undefined,
        threads: options.threads != null ? parseIntegerFlag('--threads', options.threads, 1, 256) : undefined
      })
      cli.print(command, result, () => `serving ${result.model} layers ${result.layers.start}-${result.layers.end} on /permagent/infer/1.0.0`)
    })
}
