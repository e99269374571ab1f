/**
 * The entry point of a stage worker thread (see stage-worker.ts): opens one Stage here and runs
 * it for the main thread, holding the KV caches, so onnxruntime (synchronous on the calling
 * thread in onnxruntime-node) never blocks the main thread's event loop.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads'
import { KvCache } from './kv-cache.ts'
import { Stage } from './stage.ts'
import { errorToWire, movable, type StageWorkerData, type StageWorkerReply, type StageWorkerRequest } from './stage-worker-wire.ts'

async function serve (data: StageWorkerData): Promise<void> {
  const port = parentPort as NonNullable<typeof parentPort>
  const post = (reply: StageWorkerReply, transfer: ArrayBuffer[] = []): void => {
    try {
      port.postMessage(reply, transfer)
    } catch {
      // a buffer onnxruntime does not let go of (external memory) is copied instead
      port.postMessage(reply)
    }
  }
  let stage: Stage
  try {
    stage = await Stage.open(data.dataDir, data.manifest, data.span, data.options)
  } catch (err) {
    post({ type: 'failed', error: errorToWire(err) })
    return
  }
  const caches = new Map<number, KvCache>()
  // runs one at a time, in arrival order (each session's steps arrive in its order)
  let queue = Promise.resolve()
  port.on('message', (request: StageWorkerRequest) => {
    if (request.type === 'drop') {
      queue = queue.then(() => { caches.delete(request.cache) })
      return
    }
    queue = queue.then(async () => {
      try {
        let cache = caches.get(request.cache)
        if (cache === undefined) {
          cache = stage.newCache()
          caches.set(request.cache, cache)
        }
        const output = await stage.run(request.input, cache)
        // ort's output arrays are fresh per run and not kept here (the cache holds only present K/V)
        post({ type: 'ran', id: request.id, length: cache.length, output }, [...movable(output.hidden), ...movable(output.logits)])
      } catch (err) {
        post({ type: 'error', id: request.id, error: errorToWire(err) })
      }
    })
  })
  post({ type: 'ready', maxContext: stage.maxContext })
}

if (!isMainThread && (workerData as StageWorkerData | null)?.kind === 'permagent-stage-worker') await serve(workerData as StageWorkerData)
