import type { Command } from 'commander'
import { connectToDaemon } from '../../src/client/index.ts'
import { loadManifest, parseModelConfig, synthConfig, SYNTH_SHAPES, type ModelSpec, type SynthShape } from '../../src/model/index.ts'
import { planPool, type LivePoolPlan, type PoolPlan, type PoolPlanOptions } from '../../src/split/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'
import { parseSize } from './split.ts'

function bytes (n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`
  return `${n} B`
}

const MACHINE_GROUP = /^(?:(\d+)\s*x\s*)?(.+)$/i

/** Machines like "4x16GB", "16GB,16GB,8GB" or "2x16GB,1x8GB": one memory size per machine. */
export function parseMachines (value: string): number[] {
  const out: number[] = []
  for (const part of value.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const match = MACHINE_GROUP.exec(part)
    if (match == null) throw new UsageError(`--machines takes groups like 4x16GB, got "${part}"`)
    const count = match[1] != null ? parseIntegerFlag('--machines', match[1], 1, 4096) : 1
    const size = parseSize('--machines', match[2])
    for (let i = 0; i < count; i++) out.push(size)
    if (out.length > 4096) throw new UsageError('--machines lists at most 4096 machines')
  }
  if (out.length === 0) throw new UsageError('--machines takes groups like 4x16GB')
  return out
}

interface PlanFlags {
  spec?: string
  quant?: string
  dtype?: string
  machines?: string
  sessions?: string
  maxLength?: string
  reserve?: string
  clientSeparate?: boolean
  msPerLayer?: string
  rttMs?: string
  headLayers?: string
  tailLayers?: string
  timeout?: string
  measureLocal?: boolean
}

function number (flag: string, value: string, min: number, max: number): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${flag} must be a number between ${min} and ${max}, got "${value}"`)
  return n
}

function showPool (plan: PoolPlan, title: string): string {
  const lines = [
    `${title}: ${plan.layers} layers, ${plan.format.dtype}${plan.format.quant === 'none' ? '' : ` ${plan.format.quant}`}, ${bytes(plan.modelBytes)} of weights (${bytes(plan.layerBytes)} a layer, KV ${bytes(plan.kvBytesPerLayerPosition)} per layer and position)`,
    `client part (embeddings, head and tail layers, LM head): ${bytes(plan.clientBytes)}`
  ]
  for (const m of plan.machines) {
    lines.push(`  machine ${m.index} (${bytes(m.memoryBytes)}, ${bytes(m.usableBytes)} usable): ${m.role === 'client' ? 'client' : 'server'}${m.span != null ? `, layers ${m.span.start}-${m.span.end}` : ''}; weights ${bytes(m.weightBytes)}, KV ${bytes(m.kvBytes)}, ${bytes(m.freeBytes)} left`)
  }
  lines.push(plan.uncovered.length === 0 ? 'every layer placed' : `not placed: layers ${plan.uncovered.map((r) => `${r.start}-${r.end}`).join(', ')}`)
  lines.push(`fits: ${plan.fits ? 'yes' : 'no'}`)
  if (plan.projected != null) lines.push(`projected (estimated from the figures given): ${plan.projected.msPerToken.toFixed(1)} ms/token, ${plan.projected.tokensPerSecond.toFixed(2)} tokens/s over ${plan.projected.hops} hops`)
  for (const note of plan.notes) lines.push(`note: ${note}`)
  return lines.join('\n')
}

type LiveReply = LivePoolPlan & { model: string, dtype: string, quant: string, withdrawn: string[], failed: Array<{ peer: string, code: string, message: string }> }

const short = (peer: string): string => `…${peer.slice(-8)}`

function showLive (plan: LiveReply): string {
  const lines = [
    `${plan.model}: ${plan.layers} layers, ${plan.dtype}${plan.quant === 'none' ? '' : ` ${plan.quant}`}; this node keeps layers 0-${plan.headLayers} and ${plan.layers - plan.tailLayers}-${plan.layers} with embeddings and LM head (${bytes(plan.clientBytes)})`,
    `servers: ${plan.servers.length} found${plan.withdrawn.length > 0 ? `, ${plan.withdrawn.length} withdrawn` : ''}${plan.failed.length > 0 ? `, ${plan.failed.length} failed` : ''}`
  ]
  for (const s of plan.servers) {
    lines.push(`  ${short(s.peer)} layers ${s.start}-${s.end}: weights ${bytes(s.weightBytes)}, KV ${bytes(s.kvBytesPerPosition)}/position; free ${bytes(s.freeMemoryBytes)}, sessions ${s.freeSessions}/${s.maxSessions}; ${s.msPerLayer.toFixed(2)} ms/layer, RTT ${s.rttMs == null ? '-' : `${s.rttMs.toFixed(1)} ms`}; v${s.version}${s.teamOnly ? ', team only' : ''}`)
  }
  for (const f of plan.failed) lines.push(`  ${short(f.peer)} failed: ${f.code} ${f.message}`)
  const groups: string[] = []
  for (const c of plan.coverage) {
    const who = c.peers.length === 0 ? 'nobody' : c.peers.map(short).join(' ')
    const last = groups[groups.length - 1]
    if (last?.endsWith(`: ${who}`) === true) groups[groups.length - 1] = last.replace(/-(\d+):/, `-${c.layer + 1}:`)
    else groups.push(`${c.layer}-${c.layer + 1}: ${who}`)
  }
  lines.push(`coverage: ${groups.join('; ')}`)
  lines.push(plan.uncovered.length === 0 ? 'uncovered: none' : `uncovered: layers ${plan.uncovered.map((r) => `${r.start}-${r.end}`).join(', ')} (${bytes(plan.uncoveredBytes)} of weights; servers report ${bytes(plan.poolFreeMemoryBytes)} free)`)
  lines.push(`fits the pool: ${plan.fits ? `yes, route ${(plan.route ?? []).map((h) => `${h.start}-${h.end}@${short(h.peer)}`).join(' -> ')}` : 'no'}`)
  if (plan.projected != null) {
    lines.push(`projected: ${plan.projected.msPerToken.toFixed(1)} ms/token = ${plan.projected.tokensPerSecond.toFixed(1)} tokens/s (middle ${plan.projected.middleMsPerToken.toFixed(1)} ms from measured RTTs and per-layer compute; local ${plan.projected.localMsPerToken.toFixed(1)} ms ${plan.projected.localMeasured ? 'measured here' : 'estimated'})`)
  }
  for (const note of plan.notes) lines.push(`note: ${note}`)
  return lines.join('\n')
}

/** model plan: the live pool of a stored model's servers, or a pool sized from a model's shape. */
export function register (program: Command, cli: CliContext): void {
  const model = program.commands.find((c) => c.name() === 'model') ?? program.command('model').description('models')
  model.command('plan')
    .description('which peers serve which layers of a model, memory per span, whether it fits, projected tokens/s; or, with --machines, whether a model fits machines of given memory')
    .argument('[model]', 'stored model name (live pool through the running node, or its shape with --machines)')
    .option('--spec <shape>', `plan a model by shape, without weights: ${SYNTH_SHAPES.join(' | ')}`)
    .option('--quant <quant>', 'with --spec: none, int8 or int4 (default none)')
    .option('--dtype <dtype>', 'with --spec: f32 or f16 (default f16)')
    .option('--machines <list>', 'machines to pack the model on, e.g. 4x16GB or 16GB,8GB (machine 0 is this one)')
    .option('--sessions <n>', 'with --machines: sessions each server holds (KV budget, default 1)')
    .option('--max-length <n>', 'positions per session (default 2048 with --machines, 512 live)')
    .option('--reserve <fraction>', 'with --machines: share of memory kept for the OS and runtime (default 0.15)')
    .option('--client-separate', 'with --machines: this machine is not one of them')
    .option('--ms-per-layer <ms>', 'with --machines: a measured ms per layer, for a tokens/s estimate')
    .option('--rtt-ms <ms>', 'with --machines: a measured round trip per hop')
    .option('--head-layers <n>', 'layers the client keeps at the start (default 1)')
    .option('--tail-layers <n>', 'layers the client keeps at the end (default 1)')
    .option('--timeout <ms>', 'live: deadline of the DHT lookup and of each probe (default 10000)')
    .option('--measure-local', 'live: measure this node\'s head and tail (loads their weights) instead of estimating them')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, flags: PlanFlags, command: Command) => {
      const headLayers = flags.headLayers != null ? parseIntegerFlag('--head-layers', flags.headLayers, 1, 100_000) : undefined
      const tailLayers = flags.tailLayers != null ? parseIntegerFlag('--tail-layers', flags.tailLayers, 1, 100_000) : undefined
      const maxLength = flags.maxLength != null ? parseIntegerFlag('--max-length', flags.maxLength, 1, 1 << 24) : undefined
      if (flags.spec != null || flags.machines != null) {
        if (flags.machines == null) throw new UsageError('--spec plans against --machines, e.g. --machines 4x16GB')
        if (flags.timeout != null || flags.measureLocal === true) throw new UsageError('--timeout and --measure-local are for a live plan (without --machines)')
        let spec: ModelSpec
        let format: Pick<PoolPlanOptions, 'dtype' | 'quant' | 'blockSize' | 'lmHeadBits'>
        let title: string
        if (flags.spec != null) {
          if (name != null) throw new UsageError('give a stored model or --spec, not both')
          if (!SYNTH_SHAPES.includes(flags.spec as SynthShape)) throw new UsageError(`--spec is one of ${SYNTH_SHAPES.join(', ')}`)
          if (flags.quant != null && !['none', 'int8', 'int4'].includes(flags.quant)) throw new UsageError('--quant is none, int8 or int4')
          if (flags.dtype != null && !['f32', 'f16'].includes(flags.dtype)) throw new UsageError('--dtype is f32 or f16')
          spec = parseModelConfig(JSON.stringify(synthConfig({ shape: flags.spec as SynthShape })))
          format = { dtype: (flags.dtype ?? 'f16') as 'f32' | 'f16', quant: (flags.quant ?? 'none') as 'none' | 'int8' | 'int4' }
          title = flags.spec
        } else {
          if (name == null) throw new UsageError('give a stored model or --spec SHAPE')
          if (flags.quant != null || flags.dtype != null) throw new UsageError('--quant and --dtype go with --spec; a stored model has its own')
          const manifest = await loadManifest(cli.paths(command).root, name)
          spec = manifest.spec
          format = { dtype: manifest.dtype, quant: manifest.quant, blockSize: manifest.quantBlockSize, lmHeadBits: manifest.lmHeadBits ?? undefined }
          title = name
        }
        const plan = planPool(spec, parseMachines(flags.machines), {
          ...format,
          headLayers,
          tailLayers,
          maxLength,
          sessions: flags.sessions != null ? parseIntegerFlag('--sessions', flags.sessions, 1, 1 << 16) : undefined,
          reserveFraction: flags.reserve != null ? number('--reserve', flags.reserve, 0, 0.99) : undefined,
          client: flags.clientSeparate === true ? 'separate' : 'first',
          msPerLayer: flags.msPerLayer != null ? number('--ms-per-layer', flags.msPerLayer, 0, 1e6) : undefined,
          rttMs: flags.rttMs != null ? number('--rtt-ms', flags.rttMs, 0, 1e6) : undefined
        })
        cli.print(command, plan, () => showPool(plan, title))
        return
      }
      if (name == null) throw new UsageError('give a stored model (live pool), or --spec SHAPE --machines LIST')
      for (const [flag, value] of Object.entries({ '--quant': flags.quant, '--dtype': flags.dtype, '--sessions': flags.sessions, '--reserve': flags.reserve, '--ms-per-layer': flags.msPerLayer, '--rtt-ms': flags.rttMs })) {
        if (value != null) throw new UsageError(`${flag} goes with --machines`)
      }
      const timeoutMs = flags.timeout != null ? parseIntegerFlag('--timeout', flags.timeout, 100, 120_000) : undefined
      const client = await connectToDaemon(cli.paths(command).root)
      const plan = await client.call<LiveReply>('POST', '/api/model/plan', { model: name, headLayers, tailLayers, maxLength, timeoutMs, measureLocal: flags.measureLocal === true ? true : undefined }, { timeoutMs: 300_000 })
      cli.print(command, plan, () => showLive(plan))
    })
}
