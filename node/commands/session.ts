import type { Command } from 'commander'
import { connectToDaemon } from '../../src/client/index.ts'
import type { SamplingOptions } from '../../src/inference/index.ts'
import type { GenerationStep, SessionView } from '../../src/sessions/index.ts'
import type { MigrationResult } from '../../src/usxf/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

// generation and migration run as long as they need; the daemon bounds them (tokens per call, timeouts)
const LONG_CALL = { timeoutMs: 3_600_000 }
const QUANTIZATIONS = ['none', 'f16', 'int8-block']

type StepReply = Omit<GenerationStep, 'session'> & { id: string, session: SessionView }

function parseNumberFlag (flag: string, value: string, min: number, max: number): number {
  const number = Number(value)
  if (value.trim() === '' || !Number.isFinite(number) || number < min || number > max) throw new UsageError(`${flag} must be a number between ${min} and ${max}, got "${value}"`)
  return number
}

function parseIds (flag: string, value: string, limit: number): number[] {
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (parts.length === 0 || parts.length > limit) throw new UsageError(`${flag} takes a comma-separated list of up to ${limit} token ids`)
  return parts.map((p) => parseIntegerFlag(flag, p, 0, 2 ** 31 - 1))
}

interface SamplingFlags { temperature?: string, topK?: string, topP?: string, repetitionPenalty?: string, seed?: string }

function samplingOf (flags: SamplingFlags): SamplingOptions | undefined {
  const sampling: SamplingOptions = {}
  if (flags.temperature !== undefined) sampling.temperature = parseNumberFlag('--temperature', flags.temperature, 0, 100)
  if (flags.topK !== undefined) sampling.topK = parseIntegerFlag('--top-k', flags.topK, 0, 1 << 24)
  if (flags.topP !== undefined) sampling.topP = parseNumberFlag('--top-p', flags.topP, 1e-9, 1)
  if (flags.repetitionPenalty !== undefined) sampling.repetitionPenalty = parseNumberFlag('--repetition-penalty', flags.repetitionPenalty, 1e-3, 100)
  if (flags.seed !== undefined) sampling.seed = parseIntegerFlag('--seed', flags.seed, 0, 2 ** 32 - 1)
  return Object.keys(sampling).length === 0 ? undefined : sampling
}

function addSamplingOptions (command: Command): Command {
  return command
    .option('--temperature <t>', '0 = greedy (the default)')
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)')
    .option('--top-p <p>', 'nucleus sampling mass')
    .option('--repetition-penalty <r>', 'penalize tokens already in the context (> 1)')
    .option('--seed <n>', 'sampling seed')
}

function promptOf (prompt: string | undefined, promptIds: string | undefined, required: boolean): { prompt?: string, promptIds?: number[] } {
  if (prompt !== undefined && promptIds !== undefined) throw new UsageError('give a prompt or --prompt-ids, not both')
  if (required && prompt === undefined && promptIds === undefined) throw new UsageError('give a prompt or --prompt-ids')
  if (promptIds !== undefined) return { promptIds: parseIds('--prompt-ids', promptIds, 1 << 20) }
  return prompt !== undefined ? { prompt } : {}
}

function sessionPath (id: string, suffix = ''): string {
  return `/api/sessions/${encodeURIComponent(id)}${suffix}`
}

function stepText (step: StepReply): string {
  const output = step.text !== '' ? step.text : step.tokens.join(',')
  return `${output}\n(session ${step.id}: ${step.session.positions} positions of ${step.session.maxContext}, ${step.finishReason})`
}

function sessionLine (s: SessionView): string {
  return `${s.id.padEnd(20)} ${s.model.padEnd(16)} ${String(s.positions).padStart(6)}/${s.maxContext} positions  ${s.state.padEnd(10)} ${s.origin}`
}

const ms = (value: number): string => value < 10 ? value.toFixed(1) : value.toFixed(0)

function bytes (value: number): string {
  if (value >= 1e9) return `${(value / 1e9).toFixed(2)} GB`
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} MB`
  return `${(value / 1e3).toFixed(1)} kB`
}

/** The warm-start estimate, bytes, timings and fidelity verdict of a migration, for a person. */
export function describeMigration (result: MigrationResult): string {
  const e = result.estimate
  const lines = [
    result.outcome === 'migrated'
      ? `session ${result.sessionId} migrated to ${result.peer}`
      : `session ${result.sessionId} stays here: the warm-start estimate prefers a re-prefill on the target`,
    `estimate: transfer ${ms(e.transferMs)} ms vs re-prefill ${ms(e.reprefillMs)} ms (ratio ${e.ratio.toFixed(3)}${e.forced ? ', migration asked for' : ''}); rtt ${ms(e.rttMs)} ms, ${bytes(e.bandwidthBytesPerSecond)}/s, target prefill ${e.prefillTokensPerSecond.toFixed(0)} tokens/s`,
    `state: ${result.positions} positions, ${bytes(result.rawBytes)} raw, ${bytes(result.streamBytes)} sent${result.quantization !== null ? ` (${result.quantization})` : ''}`
  ]
  const t = result.timings
  lines.push(`timings: total ${ms(t.totalMs)} ms = negotiate ${ms(t.negotiateMs)} + transfer ${ms(t.transferMs)} (target decode ${ms(t.targetDecodeMs)}, attach ${ms(t.targetAttachMs)}, fidelity ${ms(t.targetFidelityMs)}) + commit ${ms(t.commitMs)}`)
  const f = result.fidelity
  if (f !== null) lines.push(`fidelity: ${f.verdict} (${f.matching}/${f.compared} continuation tokens matched${f.limitedBy !== null ? `; limited by the ${f.limitedBy}'s context` : ''})`)
  return lines.join('\n')
}

/** session start|list|show|continue|migrate|close: generation sessions hosted by the running node. */
export function register (program: Command, cli: CliContext): void {
  const session = program.command('session').description('generation sessions hosted by the running node: start, continue, migrate to a peer, close')

  addSamplingOptions(session.command('start')
    .description('start a session: prefill the prompt and generate the first tokens (the last is held for the next call)')
    .argument('<model>', 'stored model name (see permagent model list)')
    .argument('[prompt]', 'prompt text (or --prompt-ids)')
    .option('--prompt-ids <ids>', 'comma-separated prompt token ids instead of text')
    .option('--max-tokens <n>', 'tokens to generate now (at least 1)', '16')
    .option('--stop-ids <ids>', 'comma-separated token ids that end a call (default: the model\'s eos ids)')
    .option('--id <id>', 'the session id (default: a random one)')
    .option('--json', 'print JSON'))
    .action(async (model: string, prompt: string | undefined, options: SamplingFlags & { promptIds?: string, maxTokens: string, stopIds?: string, id?: string }, command: Command) => {
      const body = {
        model,
        ...promptOf(prompt, options.promptIds, true),
        maxTokens: parseIntegerFlag('--max-tokens', options.maxTokens, 1, 1 << 20),
        sampling: samplingOf(options),
        stopTokens: options.stopIds !== undefined ? parseIds('--stop-ids', options.stopIds, 1024) : undefined,
        id: options.id
      }
      const client = await connectToDaemon(cli.paths(command).root)
      const step = await client.call<StepReply>('POST', '/api/sessions', body, LONG_CALL)
      cli.print(command, step, () => stepText(step))
    })

  session.command('list')
    .description('list the hosted sessions')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      const reply = await client.call<{ accepting: boolean, sessions: SessionView[] }>('GET', '/api/sessions')
      cli.print(command, reply, () => [
        ...(reply.sessions.length === 0 ? ['no sessions'] : reply.sessions.map(sessionLine)),
        ...(reply.accepting ? [] : ['(this node is drained: it takes no new sessions)'])
      ].join('\n'))
    })

  session.command('show')
    .description('show a session: model, positions, state, the output generated here')
    .argument('<id>', 'session id')
    .option('--json', 'print JSON')
    .action(async (id: string, _options, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      const s = await client.call<SessionView>('GET', sessionPath(id))
      cli.print(command, s, () => [
        sessionLine(s),
        `pending token ${s.pendingToken ?? '-'}, prompt ${s.promptTokens} tokens, ${s.output.length} generated here${s.finishReason !== null ? ` (last call: ${s.finishReason})` : ''}`,
        `created ${s.createdAt}, last used ${s.lastUsedAt}`,
        s.text !== '' ? s.text : s.output.join(',')
      ].join('\n'))
    })

  addSamplingOptions(session.command('continue')
    .description('generate more tokens in a session (optionally after more prompt text or ids)')
    .argument('<id>', 'session id')
    .argument('[prompt]', 'text to feed first (a new turn)')
    .option('--prompt-ids <ids>', 'token ids to feed first instead of text')
    .option('--max-tokens <n>', 'tokens to generate', '16')
    .option('--json', 'print JSON'))
    .action(async (id: string, prompt: string | undefined, options: SamplingFlags & { promptIds?: string, maxTokens: string }, command: Command) => {
      const body = { maxTokens: parseIntegerFlag('--max-tokens', options.maxTokens, 1, 1 << 20), ...promptOf(prompt, options.promptIds, false), sampling: samplingOf(options) }
      const client = await connectToDaemon(cli.paths(command).root)
      const step = await client.call<StepReply>('POST', sessionPath(id, '/generate'), body, LONG_CALL)
      cli.print(command, step, () => stepText(step))
    })

  session.command('migrate')
    .description('move a session to a connected peer (USXF: signed KV transfer, fidelity check, two-phase commit)')
    .argument('<id>', 'session id')
    .requiredOption('--to <peer>', 'the target peer id (see permagent peers)')
    .option('--quantization <q>', 'wire quantization: none (exact, default), f16 or int8-block; a comma list is an order of preference')
    .option('--fidelity-tokens <n>', 'greedy tokens both sides compare before the commit (default 16, 0 skips)')
    .option('--force', 'commit even if a lossy transfer changed the continuation')
    .option('--auto', 'let the warm-start estimate decide; the session stays when a re-prefill looks faster')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { to: string, quantization?: string, fidelityTokens?: string, force?: boolean, auto?: boolean }, command: Command) => {
      let quantization: string[] | undefined
      if (options.quantization !== undefined) {
        quantization = options.quantization.split(',').map((q) => q.trim())
        const bad = quantization.find((q) => !QUANTIZATIONS.includes(q))
        if (bad !== undefined || quantization.length === 0 || quantization.length > 3) throw new UsageError(`--quantization takes ${QUANTIZATIONS.join(', ')} (or a comma list of them), got "${options.quantization}"`)
      }
      const body = {
        to: options.to,
        quantization,
        fidelityTokens: options.fidelityTokens !== undefined ? parseIntegerFlag('--fidelity-tokens', options.fidelityTokens, 0, 1024) : undefined,
        force: options.force === true ? true : undefined,
        auto: options.auto === true ? true : undefined
      }
      const client = await connectToDaemon(cli.paths(command).root)
      const result = await client.call<MigrationResult>('POST', sessionPath(id, '/migrate'), body, LONG_CALL)
      cli.print(command, result, () => describeMigration(result))
    })

  session.command('close')
    .description('close a session and free its cache')
    .argument('<id>', 'session id')
    .option('--json', 'print JSON')
    .action(async (id: string, _options, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      const result = await client.call<{ closed: string }>('DELETE', sessionPath(id))
      cli.print(command, result, () => `closed session ${result.closed}`)
    })
}
