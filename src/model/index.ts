export { parseModelConfig, requiredTensors, type ModelSpec, type ModelFamily, type RopeScaling, type TensorRequirement } from './config.ts'
export { UnsupportedModelError, ModelConfigError, CheckpointError, ModelNotFoundError, ModelExistsError, ModelStoreCorruptError } from './errors.ts'
export { f16ToF32, f32ToF16, bf16ToF32, f32ToBf16, type CheckpointDtype } from './dtype.ts'
export { openCheckpoint, readSafetensorsHeader, safetensorsHeader, type Checkpoint, type CheckpointTensor, type SafetensorsEntry } from './safetensors.ts'
export { ropeInverseFrequencies, ropeTables } from './rope.ts'
export { ReferenceModel, type TensorSource } from './reference.ts'
export { quantizeRows, dequantizeRows, quantizedSizes, type QuantBits, type QuantizedRows } from './quantize.ts'
export { MANIFEST_FILE, weightBytes, spanWeightBytes, layerOfTensor, type ModelManifest, type StoredTensor, type StoredFile, type WeightDtype, type Quantization } from './manifest.ts'
export { buildStageGraph, validateSpan, STAGE_IO, type StageSpan, type StageGraphOptions } from './stage-graph.ts'
export { TextTokenizer, type ChatMessage } from './tokenizer.ts'
export {
  importModel, loadManifest, listModels, removeModel, verifyModel, loadTokenizer, modelDir, modelsDir, summarize, validateModelName,
  type ImportOptions, type ImportProgress, type ModelSummary
} from './store.ts'
export { synthesizeModel, synthConfig, wordLevelTokenizer, SYNTH_SHAPES, type SynthShape, type SynthOptions } from './synth.ts'
