import { PermagentError } from '../util/index.ts'
import type { ModelManifest, StageSpan } from '../model/index.ts'
import { ContextFullError, KvCacheMismatchError, StageInputError } from './errors.ts'
import type { StageInput, StageOptions, StageOutput } from './stage.ts'

/** What the main thread gives a stage worker at start (workerData). */
export interface StageWorkerData {
  kind: 'permagent-stage-worker'
  dataDir: string
  manifest: ModelManifest
  span: StageSpan
  options: StageOptions
}

/** Main thread to worker. A cache is created in the worker on its first run. */
export type StageWorkerRequest =
  | { type: 'run', id: number, cache: number, input: StageInput }
  | { type: 'drop', cache: number }

/** Worker to main thread. */
export type StageWorkerReply =
  | { type: 'ready', maxContext: number }
  | { type: 'failed', error: WireError }
  | { type: 'ran', id: number, length: number, output: StageOutput }
  | { type: 'error', id: number, error: WireError }

export interface WireError {
  name: string
  code: string | null
  message: string
}

export function errorToWire (err: unknown): WireError {
  if (err instanceof PermagentError) return { name: err.name, code: err.code, message: err.message }
  if (err instanceof Error) return { name: err.name, code: null, message: err.message }
  return { name: 'Error', code: null, message: String(err) }
}

/** The same typed error the stage threw in the worker (the class by its code, the message as it was). */
export function errorFromWire (wire: WireError): Error {
  let err: Error
  if (wire.code === 'ERR_CONTEXT_FULL') err = new ContextFullError(0, 0)
  else if (wire.code === 'ERR_STAGE_INPUT') err = new StageInputError(wire.message)
  else if (wire.code === 'ERR_KV_CACHE_MISMATCH') err = new KvCacheMismatchError(wire.message)
  else if (wire.code !== null) err = new PermagentError(wire.code, wire.message)
  else if (wire.name === 'RangeError') err = new RangeError(wire.message)
  else if (wire.name === 'TypeError') err = new TypeError(wire.message)
  else err = new Error(wire.message)
  err.message = wire.message
  return err
}

/** The whole ArrayBuffer of a typed array when it is its only view, so it can be moved, not copied. */
export function movable (array: Float32Array | undefined): ArrayBuffer[] {
  if (array === undefined) return []
  const buffer = array.buffer
  return buffer instanceof ArrayBuffer && array.byteOffset === 0 && array.byteLength === buffer.byteLength ? [buffer] : []
}
