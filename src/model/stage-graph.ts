import type { ModelManifest, StoredTensor } from './manifest.ts'
import { ELEM, GraphBuilder, type ElemType } from './onnx-graph.ts'
import { ropeTables } from './rope.ts'

/** A contiguous slice of the model: layers [start, end), plus embeddings and/or the LM head. */
export interface StageSpan {
  start: number
  end: number
  /** Takes token ids and embeds them (requires start = 0). */
  embed: boolean
  /** Ends with the final norm and the LM head, producing logits (requires end = numLayers). */
  lmHead: boolean
}

/** Names of a stage graph's inputs and outputs. */
export const STAGE_IO = {
  inputIds: 'input_ids',
  hiddenIn: 'hidden_states',
  positions: 'position_ids',
  hiddenOut: 'hidden_states_out',
  logits: 'logits',
  /** int64 [1]: first sequence index whose logits the tail computes (seq - 1 for decode-only). */
  logitsFrom: 'logits_from',
  pastKey: (layer: number) => `past_key.${layer}`,
  pastValue: (layer: number) => `past_value.${layer}`,
  presentKey: (layer: number) => `present_key.${layer}`,
  presentValue: (layer: number) => `present_value.${layer}`
}

export interface StageGraphOptions {
  /** Longest context (positions) the stage accepts; sizes the rotary tables. */
  maxContext: number
  /** MatMulNBits accuracy_level: 4 computes with int8 activations (fast), 0 in f32. */
  accuracyLevel?: number
}

export function validateSpan (manifest: ModelManifest, span: StageSpan): void {
  const layers = manifest.spec.numLayers
  if (!Number.isInteger(span.start) || !Number.isInteger(span.end) || span.start < 0 || span.end > layers || span.start > span.end) {
    throw new RangeError(`stage span ${span.start}-${span.end} is not within 0-${layers}`)
  }
  if (span.embed && span.start !== 0) throw new RangeError('only a stage starting at layer 0 can embed tokens')
  if (span.lmHead && span.end !== layers) throw new RangeError(`only a stage ending at layer ${layers} can hold the LM head`)
  if (span.start === span.end && !span.embed && !span.lmHead) throw new RangeError('a stage needs at least one layer, the embeddings or the LM head')
}

/**
 * Builds the ONNX graph of a stage. Weights stay in the model directory as external data;
 * KV caches are explicit inputs ([kvHeads, past, headDim] per layer) and outputs
 * ([kvHeads, past + seq, headDim]) so a caller owns them and can read, write and move them.
 * Batch is 1: inputs are [1, seq] ids or [1, seq, hidden] f32 states, and position_ids [1, seq].
 */
export function buildStageGraph (manifest: ModelManifest, span: StageSpan, options: StageGraphOptions): Uint8Array {
  validateSpan(manifest, span)
  const spec = manifest.spec
  const g = new GraphBuilder()
  const h = spec.hiddenSize
  const d = spec.headDim
  const nh = spec.numHeads
  const kvh = spec.numKvHeads
  const group = nh / kvh
  const accuracyLevel = options.accuracyLevel ?? 4

  const declared = new Set<string>()
  const weight = (name: string): string => {
    const tensor = manifest.tensors[name]
    if (tensor === undefined) throw new Error(`manifest has no tensor ${name}`)
    if (declared.has(name)) return name
    declared.add(name)
    return g.external(name, { location: tensor.file, offset: tensor.offset, length: tensor.length, elemType: elemOf(tensor), dims: tensor.shape })
  }
  const projection = (x: string, name: string, bias: string | null): string => {
    const tensor = manifest.tensors[name]
    let y: string
    if (tensor.quant !== undefined) {
      const q = tensor.quant
      y = g.op1('MatMulNBits', [x, weight(name), weight(`${name}.scales`), weight(`${name}.zeros`)], {
        K: q.k, N: q.n, bits: q.bits, block_size: q.blockSize, accuracy_level: accuracyLevel
      }, { domain: 'com.microsoft' })
    } else if (tensor.dtype === 'f16') {
      const x16 = g.op1('Cast', [x], { to: ELEM.FLOAT16 })
      y = g.op1('Cast', [g.op1('Gemm', [x16, weight(name)], { transB: 1 })], { to: ELEM.FLOAT })
    } else {
      y = g.op1('Gemm', [x, weight(name)], { transB: 1 })
    }
    return bias === null ? y : g.op1('Add', [y, weight(bias)])
  }
  const rmsNorm = (x: string, name: string): string =>
    g.op('SimplifiedLayerNormalization', [x, weight(name)], { axis: -1, epsilon: { float: spec.rmsNormEps }, stash_type: 1 }, { outputs: 1 })[0]

  const positions = g.input(STAGE_IO.positions, ELEM.INT64, [1, 'seq'])
  const pos = g.op1('Reshape', [positions, g.int64s([-1])])
  let x: string
  if (span.embed) {
    const ids = g.input(STAGE_IO.inputIds, ELEM.INT64, [1, 'seq'])
    const rows = g.op1('Gather', [weight('embed'), g.op1('Reshape', [ids, g.int64s([-1])])], { axis: 0 })
    x = manifest.tensors.embed.dtype === 'f16' ? g.op1('Cast', [rows], { to: ELEM.FLOAT }) : rows
  } else {
    x = g.op1('Reshape', [g.input(STAGE_IO.hiddenIn, ELEM.FLOAT, [1, 'seq', h]), g.int64s([-1, h])])
  }
  for (let l = span.start; l < span.end; l++) {
    g.input(STAGE_IO.pastKey(l), ELEM.FLOAT, [kvh, 'past', d])
    g.input(STAGE_IO.pastValue(l), ELEM.FLOAT, [kvh, 'past', d])
  }

  if (span.end > span.start) {
    const tables = ropeTables(spec, options.maxContext)
    const cos = g.op1('Gather', [g.float32(Float32Array.from(tables.cos), [options.maxContext, d], 'rope_cos'), pos], { axis: 0 })
    const sin = g.op1('Gather', [g.float32(Float32Array.from(tables.sin), [options.maxContext, d], 'rope_sin'), pos], { axis: 0 })
    // Additive causal mask [group * seq, total]: key t is visible to the query at position p iff t <= p.
    const past = g.op1('Shape', [STAGE_IO.pastKey(span.start)], { start: 1, end: 2 })
    const seq = g.op1('Shape', [pos])
    const total = g.op1('Squeeze', [g.op1('Add', [past, seq]), g.int64s([0])])
    const keyPositions = g.op1('Range', [g.int64s([0], []), total, g.int64s([1], [])])
    const hidden = g.op1('Greater', [g.op1('Unsqueeze', [keyPositions, g.int64s([0])]), g.op1('Unsqueeze', [pos, g.int64s([1])])])
    const mask = g.op1('Where', [hidden, g.float32([-Infinity], []), g.float32([0], [])])
    const groupMask = group === 1 ? mask : g.op1('Tile', [mask, g.int64s([group, 1])])
    const scale = g.float32([1 / Math.sqrt(d)], [])
    const half = d / 2
    const rope = (t: string): string => {
      const first = g.op1('Slice', [t, g.int64s([0]), g.int64s([half]), g.int64s([2])])
      const second = g.op1('Slice', [t, g.int64s([half]), g.int64s([d]), g.int64s([2])])
      const rotated = g.op1('Concat', [g.op1('Neg', [second]), first], { axis: 2 })
      return g.op1('Add', [g.op1('Mul', [t, cos]), g.op1('Mul', [rotated, sin])])
    }
    const heads = (t: string, count: number): string => g.op1('Transpose', [g.op1('Reshape', [t, g.int64s([-1, count, d])])], { perm: [1, 0, 2] })

    for (let l = span.start; l < span.end; l++) {
      const p = `layers.${l}.`
      const xn = rmsNorm(x, `${p}attn_norm`)
      const q = rope(heads(projection(xn, `${p}q`, spec.qkvBias ? `${p}q_bias` : null), nh))
      const k = rope(heads(projection(xn, `${p}k`, spec.qkvBias ? `${p}k_bias` : null), kvh))
      const v = heads(projection(xn, `${p}v`, spec.qkvBias ? `${p}v_bias` : null), kvh)
      const keys = g.op1('Concat', [STAGE_IO.pastKey(l), k], { axis: 1 }, { output: STAGE_IO.presentKey(l) })
      const values = g.op1('Concat', [STAGE_IO.pastValue(l), v], { axis: 1 }, { output: STAGE_IO.presentValue(l) })
      g.output(keys, ELEM.FLOAT, [kvh, 'total', d])
      g.output(values, ELEM.FLOAT, [kvh, 'total', d])
      // Query heads sharing a KV head are stacked along the sequence axis: [kvh, group * seq, d].
      const grouped = g.op1('Reshape', [q, g.int64s([kvh, -1, d])])
      const scores = g.op1('Mul', [g.op1('MatMul', [grouped, g.op1('Transpose', [keys], { perm: [0, 2, 1] })]), scale])
      const probs = g.op1('Softmax', [g.op1('Add', [scores, groupMask])], { axis: -1 })
      const attended = g.op1('MatMul', [probs, values])
      const merged = g.op1('Reshape', [g.op1('Transpose', [g.op1('Reshape', [attended, g.int64s([nh, -1, d])])], { perm: [1, 0, 2] }), g.int64s([-1, nh * d])])
      x = g.op1('Add', [x, projection(merged, `${p}o`, spec.oBias ? `${p}o_bias` : null)])
      const xm = rmsNorm(x, `${p}mlp_norm`)
      const gate = projection(xm, `${p}gate`, null)
      const up = projection(xm, `${p}up`, null)
      const act = g.op1('Mul', [g.op1('Mul', [gate, g.op1('Sigmoid', [gate])]), up])
      x = g.op1('Add', [x, projection(act, `${p}down`, null)])
    }
  }

  if (span.lmHead) {
    const from = g.input(STAGE_IO.logitsFrom, ELEM.INT64, [1])
    const xf = rmsNorm(g.op1('Slice', [x, from, g.int64s([Number.MAX_SAFE_INTEGER]), g.int64s([0])]), 'final_norm')
    const head = manifest.tensors.lm_head !== undefined ? 'lm_head' : 'embed'
    const logits = projection(xf, head, null)
    g.op1('Reshape', [logits, g.int64s([1, -1, spec.vocabSize])], {}, { output: STAGE_IO.logits })
    g.output(STAGE_IO.logits, ELEM.FLOAT, [1, 'rows', spec.vocabSize])
  } else {
    g.op1('Reshape', [x, g.int64s([1, -1, h])], {}, { output: STAGE_IO.hiddenOut })
    g.output(STAGE_IO.hiddenOut, ELEM.FLOAT, [1, 'seq', h])
  }
  return g.encode(`${manifest.name}:${span.start}-${span.end}`)
}

function elemOf (tensor: StoredTensor): ElemType {
  return tensor.dtype === 'f32' ? ELEM.FLOAT : tensor.dtype === 'f16' ? ELEM.FLOAT16 : ELEM.UINT8
}
