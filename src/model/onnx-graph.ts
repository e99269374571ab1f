import onnxProto from 'onnx-proto'

const { onnx } = onnxProto

export const ELEM = { FLOAT: 1, UINT8: 2, INT64: 7, FLOAT16: 10 } as const
export type ElemType = typeof ELEM[keyof typeof ELEM]

export type AttributeValue = number | number[] | string | { float: number }

export interface ExternalTensor {
  /** File name relative to the model directory. */
  location: string
  offset: number
  length: number
  elemType: ElemType
  dims: number[]
}

/** A small builder over onnx-proto: nodes with generated value names, initializers, inputs, outputs. */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = []
  private readonly initializers: onnxProto.onnx.ITensorProto[] = []
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = []
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = []
  private counter = 0
  private readonly constants = new Map<string, string>()

  fresh (hint: string): string {
    return `${hint}_${this.counter++}`
  }

  input (name: string, elemType: ElemType, dims: Array<number | string>): string {
    this.inputs.push(valueInfo(name, elemType, dims))
    return name
  }

  output (name: string, elemType: ElemType, dims: Array<number | string>): void {
    this.outputs.push(valueInfo(name, elemType, dims))
  }

  /** Adds a node; returns its output names (count outputs, or the given names). */
  op (opType: string, inputs: string[], attrs: Record<string, AttributeValue> = {}, options: { domain?: string, outputs?: string[] | number } = {}): string[] {
    const outputs = Array.isArray(options.outputs) ? options.outputs : Array.from({ length: options.outputs ?? 1 }, () => this.fresh(opType.toLowerCase()))
    this.nodes.push(onnx.NodeProto.create({
      opType,
      domain: options.domain ?? '',
      name: this.fresh(`n_${opType}`),
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([name, value]) => attribute(name, value))
    }))
    return outputs
  }

  /** A one-output node. */
  op1 (opType: string, inputs: string[], attrs: Record<string, AttributeValue> = {}, options: { domain?: string, output?: string } = {}): string {
    return this.op(opType, inputs, attrs, { domain: options.domain, outputs: options.output === undefined ? 1 : [options.output] })[0]
  }

  int64s (values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`
    const known = this.constants.get(key)
    if (known !== undefined) return known
    const name = this.fresh('const_i64')
    const raw = new BigInt64Array(values.map((v) => BigInt(v)))
    this.initializers.push(onnx.TensorProto.create({ name, dataType: ELEM.INT64, dims, rawData: new Uint8Array(raw.buffer) }))
    this.constants.set(key, name)
    return name
  }

  float32 (values: Float32Array | number[], dims: number[], hint = 'const_f32'): string {
    const data = values instanceof Float32Array ? values : Float32Array.from(values)
    const small = data.length <= 16
    const key = small ? `f32:${dims.join('x')}:${Array.from(data).join(',')}` : ''
    if (small) {
      const known = this.constants.get(key)
      if (known !== undefined) return known
    }
    const name = this.fresh(hint)
    this.initializers.push(onnx.TensorProto.create({ name, dataType: ELEM.FLOAT, dims, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }))
    if (small) this.constants.set(key, name)
    return name
  }

  external (name: string, tensor: ExternalTensor): string {
    this.initializers.push(onnx.TensorProto.create({
      name,
      dataType: tensor.elemType,
      dims: tensor.dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: tensor.location },
        { key: 'offset', value: String(tensor.offset) },
        { key: 'length', value: String(tensor.length) }
      ]
    }))
    return name
  }

  encode (graphName: string): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'permagent',
      opsetImport: [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }],
      graph: { name: graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs }
    })
    return onnx.ModelProto.encode(model).finish()
  }
}

function valueInfo (name: string, elemType: ElemType, dims: Array<number | string>): onnxProto.onnx.IValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => typeof d === 'number' ? { dimValue: d } : { dimParam: d }) } } }
  })
}

function attribute (name: string, value: AttributeValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType
  if (typeof value === 'number') return { name, type: T.INT, i: value }
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) }
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value }
  return { name, type: T.FLOAT, f: value.float }
}
