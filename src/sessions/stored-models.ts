import { LocalModel } from '../inference/index.ts'
import { listModels, loadManifest, validateModelName, type ModelManifest } from '../model/index.ts'
import type { ModelIdentity } from '../usxf/index.ts'
import { PermagentError, type Logger } from '../util/index.ts'

export interface StoredModelsOptions {
  dataDir: string
  logger: Logger
  /** onnxruntime threads per stage (default: onnxruntime's choice). */
  threads?: number
  /** Longest context of every opened model (default: min(model limit, 4096), as `permagent run`). */
  maxContext?: number
}

/**
 * The node's stored models, opened on first use and kept open until close(): by name for new
 * sessions, by USXF identity (config and weights hashes) for sessions migrating in.
 */
export interface StoredModels {
  byName: (name: string) => Promise<LocalModel>
  /** The stored model with this identity, opened; undefined when none is stored. */
  byIdentity: (identity: ModelIdentity) => Promise<LocalModel | undefined>
  /** Names of the models open now. */
  openNames: () => string[]
  close: () => Promise<void>
}

export function createStoredModels (options: StoredModelsOptions): StoredModels {
  // one open per model name, shared by every caller waiting for it
  const opened = new Map<string, Promise<LocalModel>>()
  let closed = false

  const byName = async (name: string): Promise<LocalModel> => {
    validateModelName(name)
    if (closed) throw new PermagentError('ERR_UNAVAILABLE', 'the session host has stopped')
    let model = opened.get(name)
    if (model === undefined) {
      model = LocalModel.open({ dataDir: options.dataDir, name, threads: options.threads, maxContext: options.maxContext })
      opened.set(name, model)
      model.then(() => { options.logger.info({ model: name }, 'model opened for hosted sessions') }, () => { opened.delete(name) })
    }
    return await model
  }

  return {
    byName,
    async byIdentity (identity) {
      // manifests are small; reading them each time sees models imported after start
      for (const summary of await listModels(options.dataDir)) {
        let manifest: ModelManifest
        try {
          manifest = await loadManifest(options.dataDir, summary.name)
        } catch {
          continue
        }
        if (manifest.configSha256 === identity.configSha256 && manifest.weightsSha256 === identity.weightsSha256) return await byName(summary.name)
      }
      return undefined
    },
    openNames: () => [...opened.keys()],
    async close () {
      closed = true
      const models = [...opened.values()]
      opened.clear()
      for (const model of await Promise.allSettled(models)) {
        if (model.status === 'fulfilled') await model.value.close()
      }
    }
  }
}
