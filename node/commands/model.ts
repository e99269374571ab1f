import type { Command } from 'commander'
import { connectToDaemon } from '../../src/client/index.ts'
import { writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import {
  importModel, listModels, loadManifest, removeModel, summarize, synthesizeModel, verifyModel, weightBytes, SYNTH_SHAPES,
  type ChatMessage, type ImportProgress, type SynthShape
} from '../../src/model/index.ts'
import { LocalModel, type GenerateRequest, type SamplingOptions } from '../../src/inference/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'

function formatBytes (bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`
  return `${(bytes / 1e3).toFixed(1)} kB`
}

/** A one-line progress bar on stderr when it is a terminal; silent otherwise. */
function progressBar (label: string): { update: (done: number, total: number) => void, finish: () => void } {
  const tty = process.stderr.isTTY === true
  let lastDrawn = -1
  return {
    update: (done, total) => {
      if (!tty) return
      const fraction = total === 0 ? 1 : done / total
      const permille = Math.floor(fraction * 1000)
      if (permille === lastDrawn) return
      lastDrawn = permille
      const width = 30
      const filled = Math.round(fraction * width)
      process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(1)}% ${formatBytes(done)}/${formatBytes(total)}`)
    },
    finish: () => { if (tty && lastDrawn >= 0) process.stderr.write('\n') }
  }
}

function parseFloatFlag (flag: string, value: string, min: number, max: number): number {
  const number = Number(value)
  if (value.trim() === '' || !Number.isFinite(number) || number < min || number > max) throw new UsageError(`${flag} must be a number between ${min} and ${max}, got "${value}"`)
  return number
}

function parseIdList (flag: string, value: string): number[] {
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (parts.length === 0 || parts.length > 1_000_000) throw new UsageError(`${flag} takes a comma-separated list of token ids`)
  return parts.map((p) => parseIntegerFlag(flag, p, 0, 2 ** 31 - 1))
}

interface GenerationFlags {
  maxTokens?: string
  temperature?: string
  topK?: string
  topP?: string
  repetitionPenalty?: string
  seed?: string
  stopIds?: string
  split?: string
  threads?: string
  maxContext?: string
}

function addGenerationOptions (command: Command, defaultTemperature: string): Command {
  return command
    .option('--max-tokens <n>', 'most tokens to generate', '128')
    .option('--temperature <t>', '0 = greedy', defaultTemperature)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)')
    .option('--top-p <p>', 'nucleus sampling mass')
    .option('--repetition-penalty <r>', 'penalize tokens already in the context (> 1)')
    .option('--seed <n>', 'sampling seed')
    .option('--stop-ids <ids>', 'comma-separated token ids that end generation (default: the model\'s eos ids)')
    .option('--split <layers>', 'cut the model into local stages at these layers, e.g. 2,4')
    .option('--threads <n>', 'onnxruntime threads')
    .option('--max-context <n>', 'longest context in tokens (default: min(model limit, 4096))')
}

async function openModel (dataDir: string, name: string, flags: GenerationFlags): Promise<LocalModel> {
  return await LocalModel.open({
    dataDir,
    name,
    splits: flags.split === undefined ? [] : parseIdList('--split', flags.split),
    threads: flags.threads === undefined ? undefined : parseIntegerFlag('--threads', flags.threads, 1, 256),
    maxContext: flags.maxContext === undefined ? undefined : parseIntegerFlag('--max-context', flags.maxContext, 1, 1 << 24)
  })
}

function generationRequest (flags: GenerationFlags): Pick<GenerateRequest, 'maxTokens' | 'sampling' | 'stopTokens'> {
  const sampling: SamplingOptions = { temperature: parseFloatFlag('--temperature', flags.temperature ?? '0', 0, 100) }
  if (flags.topK !== undefined) sampling.topK = parseIntegerFlag('--top-k', flags.topK, 0, 1 << 24)
  if (flags.topP !== undefined) sampling.topP = parseFloatFlag('--top-p', flags.topP, 1e-9, 1)
  if (flags.repetitionPenalty !== undefined) sampling.repetitionPenalty = parseFloatFlag('--repetition-penalty', flags.repetitionPenalty, 1e-3, 100)
  if (flags.seed !== undefined) sampling.seed = parseIntegerFlag('--seed', flags.seed, 0, 2 ** 32 - 1)
  return {
    maxTokens: parseIntegerFlag('--max-tokens', flags.maxTokens ?? '128', 0, 1 << 20),
    sampling,
    stopTokens: flags.stopIds === undefined ? undefined : parseIdList('--stop-ids', flags.stopIds)
  }
}

/** model import|list|info|rm|synth, run, chat: all local on the data dir, no daemon needed. */
export function register (program: Command, cli: CliContext): void {
  const model = program.command('model').description('import, list, inspect, remove and synthesize models')

  model.command('import <dir>')
    .description('import a Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json)')
    .requiredOption('--name <name>', 'name in the model store')
    .option('--dtype <dtype>', 'f32 or f16 weights', 'f32')
    .option('--quant <quant>', 'int8 or int4 block-quantized matrices')
    .option('--json', 'print JSON')
    .action(async (dir: string, options: { name: string, dtype: string, quant?: string }, command: Command) => {
      if (options.dtype !== 'f32' && options.dtype !== 'f16') throw new UsageError('--dtype must be f32 or f16')
      if (options.quant !== undefined && options.quant !== 'int8' && options.quant !== 'int4') throw new UsageError('--quant must be int8 or int4')
      const bar = progressBar(`importing ${options.name}`)
      const started = performance.now()
      let manifest
      try {
        manifest = await importModel(cli.paths(command).root, {
          source: dir, name: options.name, dtype: options.dtype, quant: options.quant ?? 'none',
          onProgress: (p: ImportProgress) => { bar.update(p.doneBytes, p.totalBytes) }
        })
      } finally {
        bar.finish()
      }
      const summary = summarize(manifest)
      cli.print(command, { ...summary, weightsSha256: manifest.weightsSha256, seconds: (performance.now() - started) / 1000 },
        () => `imported ${summary.name}: ${summary.architecture}, ${summary.layers} layers, ${summary.dtype}${summary.quant === 'none' ? '' : ` ${summary.quant}`}, ${formatBytes(summary.bytes)}`)
    })

  model.command('list')
    .description('list stored models')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const models = await listModels(cli.paths(command).root)
      cli.print(command, models, () => models.length === 0
        ? 'no models'
        : models.map((m) => `${m.name.padEnd(24)} ${m.architecture.padEnd(18)} ${String(m.layers).padStart(3)} layers  ${(m.quant === 'none' ? m.dtype : m.quant).padEnd(5)} ${formatBytes(m.bytes)}`).join('\n'))
    })

  model.command('info <name>')
    .description('show a stored model: architecture, shapes, quantization, files and hashes')
    .option('--verify', 're-hash every file against the manifest')
    .option('--json', 'print JSON')
    .action(async (name: string, options: { verify?: boolean }, command: Command) => {
      const dataDir = cli.paths(command).root
      const manifest = await loadManifest(dataDir, name)
      if (options.verify === true) await verifyModel(dataDir, name)
      const s = manifest.spec
      const json = { ...summarize(manifest), spec: s, weightBytesPerToken: weightBytes(manifest), lmHeadBits: manifest.lmHeadBits, quantBlockSize: manifest.quantBlockSize, configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256, files: manifest.files, verified: options.verify === true }
      cli.print(command, json, () => [
        `${manifest.name}: ${s.architecture} (${s.family})`,
        `layers ${s.numLayers}, hidden ${s.hiddenSize}, intermediate ${s.intermediateSize}, heads ${s.numHeads} (kv ${s.numKvHeads}, dim ${s.headDim}), vocab ${s.vocabSize}`,
        `context ${s.maxPositions}, rope theta ${s.ropeTheta}${s.ropeScaling === null ? '' : ` (${s.ropeScaling.type} x${s.ropeScaling.factor})`}, ${s.tieWordEmbeddings ? 'tied' : 'untied'} embeddings${s.qkvBias ? ', q/k/v bias' : ''}`,
        `weights ${manifest.dtype}${manifest.quant === 'none' ? '' : `, ${manifest.quant} (block ${manifest.quantBlockSize}, LM head ${manifest.lmHeadBits ?? '-'} bits)`}; ${formatBytes(weightBytes(manifest))} read per token`,
        `weights sha256 ${manifest.weightsSha256}${options.verify === true ? ' (verified)' : ''}`,
        ...Object.entries(manifest.files).map(([file, f]) => `  ${file.padEnd(16)} ${formatBytes(f.bytes).padStart(10)}  ${f.sha256}`)
      ].join('\n'))
    })

  model.command('rm <name>')
    .description('remove a stored model')
    .option('--json', 'print JSON')
    .action(async (name: string, _options, command: Command) => {
      await removeModel(cli.paths(command).root, name)
      cli.print(command, { removed: name }, () => `removed ${name}`)
    })

  model.command('synth')
    .description('write a seeded random checkpoint in Hugging Face layout')
    .requiredOption('--shape <shape>', SYNTH_SHAPES.join(' | '))
    .requiredOption('--out <dir>', 'output directory')
    .option('--layers <n>', 'override the number of layers')
    .option('--seed <n>', 'random seed', '1')
    .option('--dtype <dtype>', 'F32, F16 or BF16 (default: F32 for tiny, BF16 otherwise)')
    .option('--json', 'print JSON')
    .action(async (options: { shape: string, out: string, layers?: string, seed: string, dtype?: string }, command: Command) => {
      if (!SYNTH_SHAPES.includes(options.shape as SynthShape)) throw new UsageError(`--shape must be one of ${SYNTH_SHAPES.join(', ')}`)
      if (options.dtype !== undefined && !['F32', 'F16', 'BF16'].includes(options.dtype)) throw new UsageError('--dtype must be F32, F16 or BF16')
      const bar = progressBar(`writing ${options.shape}`)
      let result
      try {
        result = await synthesizeModel({
          shape: options.shape as SynthShape,
          out: options.out,
          seed: parseIntegerFlag('--seed', options.seed, 0, 2 ** 32 - 1),
          layers: options.layers === undefined ? undefined : parseIntegerFlag('--layers', options.layers, 1, 1024),
          dtype: options.dtype as 'F32' | 'F16' | 'BF16' | undefined,
          onProgress: (done, total) => { bar.update(done, total) }
        })
      } finally {
        bar.finish()
      }
      cli.print(command, { out: options.out, shape: options.shape, layers: result.spec.numLayers, bytes: result.bytes },
        () => `wrote ${options.shape} (${result.spec.numLayers} layers, ${formatBytes(result.bytes)}) to ${options.out}`)
    })

  addGenerationOptions(program.command('run <model> [prompt]'), '0')
    .description('generate from a prompt (text, or --prompt-ids) with a local model')
    .option('--prompt-ids <ids>', 'comma-separated prompt token ids instead of text')
    .option('--dump-logits <file>', 'write the logits of every position (prompt included) as JSON lines: one array per position')
    .option('--json', 'print {"tokens", "text", ...} instead of streaming text')
    .option('--mesh', 'run through the running node: first and last layers here, the middle on peers serving it')
    .option('--head-layers <n>', 'with --mesh: layers kept local at the start (default 1)')
    .option('--tail-layers <n>', 'with --mesh: layers kept local at the end (default 1)')
    .option('--activations <q>', 'with --mesh: f16 (default), none (exact f32) or int8-block')
    .option('--team <id>', 'with --mesh: only current members of this team may serve (policy team-mesh)')
    .option('--verify <rate>', 'with --mesh: re-check this fraction of steps (0..1) on a second server per span, plus canaries; liars are excluded and reported')
    .option('--push', 'with --mesh: servers pass activations straight to the next server (fewer trips on slow links; off with --verify)')
    .action(async (name: string, prompt: string | undefined, options: GenerationFlags & { promptIds?: string, dumpLogits?: string, json?: boolean, mesh?: boolean, headLayers?: string, tailLayers?: string, activations?: string, team?: string, verify?: string, push?: boolean }, command: Command) => {
      if ((prompt === undefined) === (options.promptIds === undefined)) throw new UsageError('give a prompt or --prompt-ids (not both)')
      const request = generationRequest(options)
      if (options.mesh === true) {
        if (options.dumpLogits !== undefined) throw new UsageError('--dump-logits is for local runs')
        if (options.activations !== undefined && !['f16', 'none', 'int8-block'].includes(options.activations)) throw new UsageError('--activations is f16, none or int8-block')
        const verify = options.verify !== undefined ? Number(options.verify) : undefined
        if (verify !== undefined && !(options.verify?.trim() !== '' && verify >= 0 && verify <= 1)) throw new UsageError('--verify is a fraction of steps in 0..1')
        const client = await connectToDaemon(cli.paths(command).root)
        const result = await client.call<{ tokens: number[], text: string, promptTokens: number, finishReason: string, route: Array<{ start: number, end: number, peer?: string }>, faults?: Array<{ start: number, end: number, peer: string }> }>('POST', '/api/run/mesh', {
          model: name,
          ...(options.promptIds !== undefined ? { promptIds: parseIdList('--prompt-ids', options.promptIds) } : { prompt }),
          maxTokens: request.maxTokens,
          sampling: request.sampling,
          stopTokens: request.stopTokens,
          headLayers: options.headLayers !== undefined ? parseIntegerFlag('--head-layers', options.headLayers, 1, 100_000) : undefined,
          tailLayers: options.tailLayers !== undefined ? parseIntegerFlag('--tail-layers', options.tailLayers, 1, 100_000) : undefined,
          quantization: options.activations,
          verify,
          ...(options.push === true ? { push: true } : {}),
          ...(options.team !== undefined ? { policy: 'team-mesh', team: options.team } : {})
        }, { timeoutMs: 3_600_000 })
        if (options.json === true) cli.out(JSON.stringify(result))
        else cli.out(`${result.text.length > 0 ? result.text : result.tokens.join(',')}\n(route: ${result.route.map((h) => `${h.start}-${h.end}@${(h.peer ?? '').slice(-8)}`).join(' -> ')})`)
        if (options.json !== true && (result.faults?.length ?? 0) > 0) cli.out(`(verification excluded servers that answered wrongly: ${(result.faults ?? []).map((f) => `${f.start}-${f.end}@${f.peer.slice(-8)}`).join(', ')})`)
        return
      }
      const meshOnly = (['headLayers', 'tailLayers', 'activations', 'team', 'verify', 'push'] as const).filter((flag) => options[flag] !== undefined)
      if (meshOnly.length > 0) throw new UsageError(`${meshOnly.map((flag) => `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} only ${meshOnly.length === 1 ? 'applies' : 'apply'} with --mesh`)
      const local = await openModel(cli.paths(command).root, name, options)
      try {
        const logits: string[] = []
        const stream = options.json !== true
        const result = await local.generate({
          ...(options.promptIds !== undefined ? { promptIds: parseIdList('--prompt-ids', options.promptIds) } : { prompt }),
          ...request,
          onToken: stream ? (e) => { process.stdout.write(e.text) } : undefined,
          onLogits: options.dumpLogits === undefined ? undefined : (_position, row) => { logits.push(JSON.stringify(Array.from(row))) }
        })
        if (options.dumpLogits !== undefined) await writeFile(options.dumpLogits, logits.join('\n') + '\n')
        if (stream) {
          process.stdout.write(local.tokenizer === null ? `${result.tokens.join(',')}\n` : '\n')
        } else {
          cli.out(JSON.stringify({ tokens: result.tokens, text: result.text, promptTokens: result.promptTokens, finishReason: result.finishReason, prefillMs: result.prefillMs, decodeMs: result.decodeMs }))
        }
      } finally {
        await local.close()
      }
    })

  addGenerationOptions(program.command('chat <model>'), '0.7')
    .description('chat with a local model (one message per line on stdin; empty line or EOF ends)')
    .option('--system <text>', 'system message')
    .action(async (name: string, options: GenerationFlags & { system?: string }, command: Command) => {
      const request = generationRequest(options)
      const local = await openModel(cli.paths(command).root, name, options)
      if (local.tokenizer === null) throw new UsageError(`model ${name} has no tokenizer; chat needs one`)
      const messages: ChatMessage[] = options.system === undefined ? [] : [{ role: 'system', content: options.system }]
      const session = local.newSession()
      const interactive = process.stdin.isTTY === true
      const lines = createInterface({ input: process.stdin, terminal: false })
      try {
        if (interactive) process.stdout.write('> ')
        for await (const line of lines) {
          if (line.trim() === '') break
          messages.push({ role: 'user', content: line })
          const promptIds = local.encodePrompt({ messages })
          // Reuse the cached prefix of the conversation; start over when the template rewrote it.
          const cached = session.tokens.length <= promptIds.length && session.tokens.every((t, i) => promptIds[i] === t)
          if (!cached) session.reset()
          const fresh = promptIds.slice(session.tokens.length)
          const result = fresh.length === 0
            ? { text: '', tokens: [] }
            : await local.generate({ promptIds: fresh, ...request, onToken: (e) => { process.stdout.write(e.text) } }, session)
          process.stdout.write('\n')
          messages.push({ role: 'assistant', content: result.text })
          if (interactive) process.stdout.write('> ')
        }
      } finally {
        lines.close()
        await local.close()
      }
    })
}
