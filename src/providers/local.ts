import { totalmem } from 'node:os'
import { LocalModel, type GenerateResult } from '../inference/index.ts'
import { listModels } from '../model/index.ts'
import { silentLogger, type Logger } from '../util/index.ts'
import { engineRequest, engineResult } from './engine-result.ts'
import { PROVIDER_ERRORS, ProviderError } from './errors.ts'
import type { InferenceProvider, ProviderModel, ProviderRefusal, ProviderRequest, ProviderResult } from './types.ts'

export interface LocalProviderOptions {
  dataDir: string
  /** Largest model (stored bytes) run whole in this process (default half the machine's memory). */
  maxModelBytes?: number
  /** onnxruntime intra-op threads per stage. */
  threads?: number
  logger?: Logger
}

interface OpenModel { model: LocalModel, queue: Promise<unknown> }

/** Default budget for a model run whole here: half of RAM leaves room for the KV cache and the rest of the node. */
export function defaultLocalModelBytes (): number {
  return Math.floor(totalmem() / 2)
}

/**
 * Stored models run whole in this process. Each model is opened on first use and runs one
 * generation at a time, in arrival order. Nothing leaves the machine (privacy class `local`).
 */
export function createLocalProvider (options: LocalProviderOptions): InferenceProvider {
  const maxModelBytes = options.maxModelBytes ?? defaultLocalModelBytes()
  const logger = (options.logger ?? silentLogger()).child({ provider: 'local' })
  const opened = new Map<string, Promise<OpenModel>>()
  const report = { provider: 'local', kind: 'local', privacy: 'local' } as const

  const refusal = async (name: string): Promise<ProviderRefusal | null> => {
    const summary = (await listModels(options.dataDir)).find((m) => m.name === name)
    if (summary == null) return { reason: `no stored model "${name}" on this node (permagent model import)`, unknownModel: true }
    if (summary.bytes > maxModelBytes) return { reason: `model "${name}" is ${summary.bytes} bytes, more than the local limit of ${maxModelBytes} (providers.localMaxModelBytes)`, unknownModel: false }
    return null
  }

  const open = async (name: string): Promise<OpenModel> => {
    let entry = opened.get(name)
    if (entry == null) {
      entry = LocalModel.open({ dataDir: options.dataDir, name, threads: options.threads }).then((model) => ({ model, queue: Promise.resolve() }))
      opened.set(name, entry)
      entry.catch(() => { opened.delete(name) })
      logger.debug({ model: name }, 'opening local model')
    }
    return await entry
  }

  const toResult = (result: GenerateResult): ProviderResult => engineResult(result, { ...report })

  return {
    id: 'local',
    kind: 'local',
    privacy: 'local',
    models: async () => (await listModels(options.dataDir)).filter((m) => m.bytes <= maxModelBytes).map((m): ProviderModel => ({ id: m.name, ...report })),
    check: refusal,
    async generate (request: ProviderRequest, signal?: AbortSignal): Promise<ProviderResult> {
      const refused = await refusal(request.model)
      if (refused !== null) throw new ProviderError(refused.unknownModel ? PROVIDER_ERRORS.modelNotFound : PROVIDER_ERRORS.noProvider, refused.reason)
      const entry = await open(request.model)
      const run = entry.queue.then(async () => {
        signal?.throwIfAborted()
        return await entry.model.generate(engineRequest(request, signal))
      })
      entry.queue = run.catch(() => {})
      return toResult(await run)
    },
    async close () {
      const entries = [...opened.values()]
      opened.clear()
      for (const entry of entries) {
        try {
          await (await entry).model.close()
        } catch {}
      }
    }
  }
}
