import * as ort from 'onnxruntime-node'
import { buildStageGraph, modelDir, STAGE_IO, validateSpan, type ModelManifest, type StageSpan } from '../model/index.ts'
import { ContextFullError, StageInputError } from './errors.ts'
import { KvCache } from './kv-cache.ts'

export interface StageOptions {
  /** Longest context the stage accepts (default min(model max positions, 4096)). */
  maxContext?: number
  /** Threads for one run (onnxruntime intra-op); default: onnxruntime's choice. */
  threads?: number
  /** MatMulNBits accuracy level (4: int8 activations, fast; 0: f32). */
  accuracyLevel?: number
  /**
   * Let onnxruntime's worker threads spin between runs (lower latency for one busy session;
   * turn off when many stages share a process so idle pools do not burn the cores).
   */
  spinning?: boolean
}

export interface StageInput {
  /** Token ids (head stages only). */
  tokens?: readonly number[]
  /** Hidden states, f32 [seq, hidden] row-major (stages without embeddings). */
  hidden?: Float32Array
  /** Positions of the inputs; must continue the cache (cache.length, cache.length + 1, ...). */
  positions?: readonly number[]
  /** Tail stages: compute logits for every input position (default: only the last). */
  allLogits?: boolean
}

export interface StageOutput {
  /** f32 [seq, hidden] (stages without the LM head). */
  hidden?: Float32Array
  /** f32 [rows, vocab]: every position with allLogits, else the last one. */
  logits?: Float32Array
}

/**
 * One contiguous slice of a stored model running in onnxruntime: any layer span, with or without
 * the embeddings and the LM head. Stateless itself; each session passes its own KvCache.
 */
export class Stage {
  readonly manifest: ModelManifest
  readonly span: StageSpan
  readonly maxContext: number
  private readonly session: ort.InferenceSession

  private constructor (manifest: ModelManifest, span: StageSpan, maxContext: number, session: ort.InferenceSession) {
    this.manifest = manifest
    this.span = span
    this.maxContext = maxContext
    this.session = session
  }

  static async open (dataDir: string, manifest: ModelManifest, span: StageSpan, options: StageOptions = {}): Promise<Stage> {
    validateSpan(manifest, span)
    const maxContext = options.maxContext ?? Math.min(manifest.spec.maxPositions, 4096)
    if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > manifest.spec.maxPositions) {
      throw new RangeError(`maxContext must be in 1..${manifest.spec.maxPositions}`)
    }
    const graph = buildStageGraph(manifest, span, { maxContext, accuracyLevel: options.accuracyLevel })
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      // onnxruntime prints to stderr directly; keep only errors (they also surface as exceptions).
      logSeverityLevel: 3,
      extra: {
        session: {
          model_external_initializers_file_folder_path: modelDir(dataDir, manifest.name),
          ...(options.spinning === false ? { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } : {})
        }
      }
    }
    if (options.threads !== undefined) {
      sessionOptions.intraOpNumThreads = options.threads
      sessionOptions.interOpNumThreads = 1
    }
    const session = await ort.InferenceSession.create(graph, sessionOptions)
    return new Stage(manifest, span, maxContext, session)
  }

  get layers (): number {
    return this.span.end - this.span.start
  }

  newCache (): KvCache {
    const spec = this.manifest.spec
    return new KvCache({ layerStart: this.span.start, layerEnd: this.span.end, numKvHeads: spec.numKvHeads, headDim: spec.headDim })
  }

  /** Runs inputs at the next positions of `cache` and advances it. */
  async run (input: StageInput, cache: KvCache): Promise<StageOutput> {
    const spec = this.manifest.spec
    if (cache.layerStart !== this.span.start || cache.layerEnd !== this.span.end) {
      throw new StageInputError(`cache covers layers ${cache.layerStart}-${cache.layerEnd}, the stage ${this.span.start}-${this.span.end}`)
    }
    const feeds: Record<string, ort.Tensor> = {}
    let seq: number
    if (this.span.embed) {
      if (input.tokens === undefined || input.hidden !== undefined) throw new StageInputError('a head stage takes tokens')
      seq = input.tokens.length
      for (const t of input.tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= spec.vocabSize) throw new StageInputError(`token ${t} is outside the vocabulary (${spec.vocabSize})`)
      }
      feeds[STAGE_IO.inputIds] = new ort.Tensor('int64', BigInt64Array.from(input.tokens, (t) => BigInt(t)), [1, seq])
    } else {
      if (input.hidden === undefined || input.tokens !== undefined) throw new StageInputError('a stage without embeddings takes hidden states')
      if (input.hidden.length === 0 || input.hidden.length % spec.hiddenSize !== 0) throw new StageInputError(`hidden states must be [seq, ${spec.hiddenSize}]`)
      seq = input.hidden.length / spec.hiddenSize
      feeds[STAGE_IO.hiddenIn] = new ort.Tensor('float32', input.hidden, [1, seq, spec.hiddenSize])
    }
    if (seq === 0) throw new StageInputError('empty input')
    const start = cache.length
    if (input.positions !== undefined) {
      if (input.positions.length !== seq || input.positions.some((p, i) => p !== start + i)) {
        throw new StageInputError(`positions must continue the cache: expected ${start}..${start + seq - 1}`)
      }
    }
    if (start + seq > this.maxContext) throw new ContextFullError(start + seq, this.maxContext)
    feeds[STAGE_IO.positions] = new ort.Tensor('int64', BigInt64Array.from({ length: seq }, (_, i) => BigInt(start + i)), [1, seq])
    for (let l = this.span.start; l < this.span.end; l++) {
      const { keys, values } = cache.layer(l)
      feeds[STAGE_IO.pastKey(l)] = new ort.Tensor('float32', keys, [spec.numKvHeads, start, spec.headDim])
      feeds[STAGE_IO.pastValue(l)] = new ort.Tensor('float32', values, [spec.numKvHeads, start, spec.headDim])
    }
    if (this.span.lmHead) {
      feeds[STAGE_IO.logitsFrom] = new ort.Tensor('int64', BigInt64Array.of(BigInt(input.allLogits === true ? 0 : seq - 1)), [1])
    }
    const results = await this.session.run(feeds)
    if (this.layers > 0) {
      const keys: Float32Array[] = []
      const values: Float32Array[] = []
      for (let l = this.span.start; l < this.span.end; l++) {
        keys.push(results[STAGE_IO.presentKey(l)].data as Float32Array)
        values.push(results[STAGE_IO.presentValue(l)].data as Float32Array)
      }
      cache.update(start + seq, keys, values)
    } else {
      cache.update(start + seq, [], [])
    }
    return this.span.lmHead
      ? { logits: results[STAGE_IO.logits].data as Float32Array }
      : { hidden: results[STAGE_IO.hiddenOut].data as Float32Array }
  }

  async close (): Promise<void> {
    await this.session.release()
  }
}
