// Inference benchmark: prefill and decode tok/s and per-layer ms of synthetic models at
// f32/f16/int8/int4, beside the memory-bandwidth bound (weight bytes read per token / read
// bandwidth measured in this run) and the ratio measured/bound.
// Usage: node bench/inference.ts [--json] [--shapes tiny,llama-1b] [--variants f32,f16,int8,int4]
//        [--threads N] [--decode N] [--prompt N] [--no-per-layer]
// Synthetic checkpoints and imports are cached under os.tmpdir()/permagent-bench-inference.
import { parseArgs } from 'node:util'
import { tmpdir, cpus, totalmem, loadavg } from 'node:os'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import * as ort from 'onnxruntime-node'
import { importModel, loadManifest, synthesizeModel, weightBytes, type ModelManifest, type SynthShape } from '../src/model/index.ts'
import { argmax, LocalModel, Stage, type KvCache } from '../src/inference/index.ts'

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    shapes: { type: 'string', default: 'tiny,llama-1b' },
    variants: { type: 'string', default: 'f32,f16,int8,int4' },
    threads: { type: 'string' },
    decode: { type: 'string' },
    prompt: { type: 'string' },
    'no-per-layer': { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' }
  }
})
// One thread by default: on a small shared machine a second onnxruntime thread waits on a busy
// core at every op (measured here: MatMulNBits 28 GB/s with 1 thread, 13 GB/s with 2 under load).
// Bandwidth is measured with the same thread count, so the bound is comparable either way.
const threads = args.threads === undefined ? 1 : Number(args.threads)
const seed = Number(args.seed)
const cacheRoot = join(tmpdir(), 'permagent-bench-inference')
const log = (message: string): void => { process.stderr.write(`${message}\n`) }

interface Variant { name: string, dtype: 'f32' | 'f16', quant: 'none' | 'int8' | 'int4' }
const VARIANTS: Record<string, Variant> = {
  f32: { name: 'f32', dtype: 'f32', quant: 'none' },
  f16: { name: 'f16', dtype: 'f16', quant: 'none' },
  // Quantized models keep the embedding table (a lookup, not read per token) in f16.
  int8: { name: 'int8', dtype: 'f16', quant: 'int8' },
  int4: { name: 'int4', dtype: 'f16', quant: 'int4' }
}

/** Read bandwidth: onnxruntime ReduceSum over a 1 GiB f32 input with the same thread count (best of 5). */
async function measureBandwidth (): Promise<number> {
  const elements = 256 * 1024 * 1024
  const data = new Float32Array(elements).fill(1)
  const { GraphBuilder, ELEM } = await import('../src/model/onnx-graph.ts')
  const g = new GraphBuilder()
  g.input('x', ELEM.FLOAT, [elements])
  g.op1('ReduceSum', ['x'], { keepdims: 0 }, { output: 'y' })
  g.output('y', ELEM.FLOAT, [])
  const session = await ort.InferenceSession.create(g.encode('bandwidth'), { intraOpNumThreads: threads, interOpNumThreads: 1 })
  const input = new ort.Tensor('float32', data, [elements])
  let best = Infinity
  for (let i = 0; i < 6; i++) {
    const started = performance.now()
    await session.run({ x: input })
    const ms = performance.now() - started
    if (i > 0) best = Math.min(best, ms)
  }
  await session.release()
  return (elements * 4) / (best / 1000)
}

async function prepare (shape: SynthShape, variant: Variant): Promise<{ dataDir: string, name: string }> {
  const base = join(cacheRoot, `${shape}-seed${seed}`)
  const checkpoint = join(base, 'checkpoint')
  const dataDir = join(base, 'data')
  if (!existsSync(join(checkpoint, 'config.json.done'))) {
    log(`synthesizing ${shape} into ${checkpoint}`)
    let last = 0
    await synthesizeModel({ shape, out: checkpoint, seed, onProgress: (done, total) => { if (done - last > total / 10) { last = done; log(`  ${(100 * done / total).toFixed(0)}%`) } } })
    await import('node:fs/promises').then(async (fs) => await fs.writeFile(join(checkpoint, 'config.json.done'), ''))
  }
  const name = `${shape}-${variant.name}`
  try {
    await loadManifest(dataDir, name)
  } catch {
    log(`importing ${name}`)
    const started = performance.now()
    let lastTenth = -1
    await importModel(dataDir, {
      source: checkpoint, name, dtype: variant.dtype, quant: variant.quant,
      onProgress: (p) => { const tenth = Math.floor(10 * p.doneBytes / p.totalBytes); if (tenth !== lastTenth) { lastTenth = tenth; log(`  ${tenth * 10}%`) } }
    })
    log(`  imported in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  }
  return { dataDir, name }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

interface Row {
  model: string
  variant: string
  layers: number
  weightMB: number
  prefillTokens: number
  prefillTokS: number
  decodeTokS: number
  decodeMsPerToken: number
  decodeBestMsPerToken: number
  perLayerMs: number | null
  boundMsPerToken: number
  boundTokS: number
  ratio: number
  bestRatio: number
  /** Top-1 agreement with the f32 model over the prompt positions (teacher-forced). */
  top1VsF32: number | null
}

/** Greedy choices of the f32 model at every prompt position, per shape. */
const f32Choices = new Map<string, number[]>()

async function benchOne (shape: SynthShape, variant: Variant): Promise<(bandwidth: number) => Row> {
  const { dataDir, name } = await prepare(shape, variant)
  const manifest = await loadManifest(dataDir, name)
  const promptLength = Number(args.prompt ?? (shape === 'tiny' ? 64 : 128))
  const decodeSteps = Number(args.decode ?? (shape === 'tiny' ? 64 : 24))
  const prompt = Array.from({ length: promptLength }, (_, i) => 3 + ((i * 7919) % (manifest.spec.vocabSize - 3)))
  log(`running ${name}`)
  const model = await LocalModel.open({ dataDir, name, threads, maxContext: promptLength + decodeSteps + 8 })
  const prefillTimes: number[] = []
  const decodeTimes: number[] = []
  let top1VsF32: number | null = null
  try {
    const vocab = manifest.spec.vocabSize
    const all = await model.newSession().forward(prompt, { allLogits: true })
    const choices = prompt.map((_, i) => argmax(all.subarray(i * vocab, (i + 1) * vocab)))
    if (variant.name === 'f32') f32Choices.set(shape, choices)
    const reference = f32Choices.get(shape)
    if (reference !== undefined) top1VsF32 = choices.filter((c, i) => c === reference[i]).length / choices.length
    for (let round = 0; round < 3; round++) {
      const session = model.newSession()
      let started = performance.now()
      await session.forward(prompt)
      prefillTimes.push(performance.now() - started)
      let token = 5
      for (let i = 0; i < decodeSteps; i++) {
        started = performance.now()
        await session.forward([token])
        if (round > 0 || i >= 2) decodeTimes.push(performance.now() - started)
        token = 3 + ((token * 31) % (manifest.spec.vocabSize - 3))
      }
    }
  } finally {
    await model.close()
  }
  const perLayerMs = args['no-per-layer'] || manifest.spec.numLayers < 3 ? null : await perLayer(dataDir, manifest, prompt.slice(0, 16), decodeSteps)
  const decodeMs = median(decodeTimes)
  const bestMs = Math.min(...decodeTimes)
  const bytes = weightBytes(manifest)
  return (bandwidth) => {
    const boundMs = (bytes / bandwidth) * 1000
    return {
      model: shape,
      variant: variant.name,
      layers: manifest.spec.numLayers,
      weightMB: bytes / 1e6,
      prefillTokens: promptLength,
      prefillTokS: promptLength / (Math.min(...prefillTimes) / 1000),
      decodeTokS: 1000 / decodeMs,
      decodeMsPerToken: decodeMs,
      decodeBestMsPerToken: bestMs,
      perLayerMs,
      boundMsPerToken: boundMs,
      boundTokS: 1000 / boundMs,
      ratio: decodeMs / boundMs,
      bestRatio: bestMs / boundMs,
      top1VsF32
    }
  }
}

/** Median decode time of one transformer layer: the model cut after every layer, middle stages timed. */
async function perLayer (dataDir: string, manifest: ModelManifest, prompt: number[], steps: number): Promise<number> {
  const layers = manifest.spec.numLayers
  const stages: Stage[] = []
  try {
    for (let l = 0; l < layers; l++) {
      stages.push(await Stage.open(dataDir, manifest, { start: l, end: l + 1, embed: l === 0, lmHead: l === layers - 1 }, { threads, maxContext: prompt.length + steps + 8, spinning: false }))
    }
    const caches: KvCache[] = stages.map((s) => s.newCache())
    const times: number[] = []
    const pass = async (tokens: number[], timed: boolean): Promise<void> => {
      let hidden: Float32Array | undefined
      for (let i = 0; i < stages.length; i++) {
        const started = performance.now()
        const out = await stages[i].run(i === 0 ? { tokens } : { hidden }, caches[i])
        if (timed && i > 0 && i < stages.length - 1) times.push(performance.now() - started)
        hidden = out.hidden
      }
    }
    await pass(prompt, false)
    for (let i = 0; i < steps; i++) await pass([5 + i], i >= 2)
    return median(times)
  } finally {
    for (const stage of stages) await stage.close()
  }
}

function table (rows: Row[]): string {
  const header = ['model', 'variant', 'layers', 'weights MB/tok', `prefill tok/s`, 'decode tok/s', 'decode ms/tok', 'ms/layer', 'bound ms/tok', 'bound tok/s', 'measured/bound', 'best/bound', 'top-1 vs f32']
  const body = rows.map((r) => [r.model, r.variant, String(r.layers), r.weightMB.toFixed(1), `${r.prefillTokS.toFixed(1)} (${r.prefillTokens})`, r.decodeTokS.toFixed(1), r.decodeMsPerToken.toFixed(2), r.perLayerMs === null ? '-' : r.perLayerMs.toFixed(3), r.boundMsPerToken.toFixed(2), r.boundTokS.toFixed(1), r.ratio.toFixed(2), r.bestRatio.toFixed(2), r.top1VsF32 === null ? '-' : `${(100 * r.top1VsF32).toFixed(1)}%`])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join('  ')
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n')
}

const shapes = (args.shapes as string).split(',') as SynthShape[]
const variants = (args.variants as string).split(',').map((v) => {
  const found = VARIANTS[v]
  if (found === undefined) throw new Error(`unknown variant ${v}`)
  return found
})
const loadAverageAtStart = loadavg()[0]
// Other processes share the machine: measure before and after and keep the higher figure, which
// gives the tighter (harder to meet) bound.
log(`measuring read bandwidth (${threads} threads)`)
const bandwidthBefore = await measureBandwidth()
log(`  ${(bandwidthBefore / 1e9).toFixed(1)} GB/s`)
const results: Array<(bandwidth: number) => Row> = []
for (const shape of shapes) for (const variant of variants) results.push(await benchOne(shape, variant))
const bandwidthAfter = await measureBandwidth()
log(`  ${(bandwidthAfter / 1e9).toFixed(1)} GB/s after the runs`)
const bandwidth = Math.max(bandwidthBefore, bandwidthAfter)
const rows = results.map((finish) => finish(bandwidth))
const result = {
  bandwidthGBs: bandwidth / 1e9,
  bandwidthBeforeGBs: bandwidthBefore / 1e9,
  bandwidthAfterGBs: bandwidthAfter / 1e9,
  threads,
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  totalMemGB: totalmem() / 2 ** 30,
  loadAverageAtStart,
  loadAverageAtEnd: loadavg()[0],
  note: 'bound = weight bytes read per decode token (all matrices incl. LM head; not the embedding table) / measured read bandwidth; ratio = median measured decode ms / bound ms, best = fastest decode step / bound ms (target <= 2 for llama-1b int4 and f16)',
  rows
}
if (args.json) {
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
} else {
  process.stdout.write(`read bandwidth ${result.bandwidthGBs.toFixed(1)} GB/s (onnxruntime ReduceSum over 1 GiB, ${threads} threads; ${result.bandwidthBeforeGBs.toFixed(1)} before, ${result.bandwidthAfterGBs.toFixed(1)} after the runs); load average ${loadAverageAtStart.toFixed(2)} at start, ${result.loadAverageAtEnd.toFixed(2)} at end on ${result.cpus} cores\n\n${table(rows)}\n\n${result.note}\n`)
}
