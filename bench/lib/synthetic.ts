/**
 * Synthetic models for benchmarks: a checkpoint from synthesizeModel, imported into a model
 * store, both cached under a directory in os.tmpdir() so later runs skip the (slow, for 1B
 * shapes) synthesis and import.
 */
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { importModel, loadManifest, synthesizeModel, type SynthShape } from '../../src/model/index.ts'
import { progress } from './index.ts'

export type WeightVariant = 'f32' | 'f16' | 'int8'

export interface SyntheticModelOptions {
  cacheRoot: string
  shape: SynthShape
  seed?: number
  variant: WeightVariant
  /** config.json overrides; they name the cache entry, so a changed shape never reuses an old one. */
  config?: Record<string, unknown>
  /** Name of the cache entry (default `${shape}-seed${seed}`). */
  entry?: string
}

/** The data dir and stored model name of a cached synthetic model, synthesizing and importing it once. */
export async function syntheticModel (options: SyntheticModelOptions): Promise<{ dataDir: string, name: string }> {
  const seed = options.seed ?? 1
  const base = join(options.cacheRoot, options.entry ?? `${options.shape}-seed${seed}`)
  const checkpoint = join(base, 'checkpoint')
  const dataDir = join(base, 'data')
  if (!existsSync(join(checkpoint, '.complete'))) {
    progress(`synthesizing ${options.shape} into ${checkpoint}`)
    let tenth = -1
    await synthesizeModel({
      shape: options.shape,
      out: checkpoint,
      seed,
      config: options.config ?? {},
      onProgress: (done, total) => { const t = Math.floor(10 * done / total); if (t !== tenth) { tenth = t; progress(`  ${t * 10}%`) } }
    })
    await writeFile(join(checkpoint, '.complete'), '')
  }
  const name = `${options.shape}-${options.variant}`
  try {
    await loadManifest(dataDir, name)
  } catch {
    progress(`importing ${name}`)
    const weights = options.variant === 'f32'
      ? { dtype: 'f32' as const, quant: 'none' as const }
      : options.variant === 'f16' ? { dtype: 'f16' as const, quant: 'none' as const } : { dtype: 'f16' as const, quant: 'int8' as const }
    await importModel(dataDir, { source: checkpoint, name, ...weights })
  }
  return { dataDir, name }
}
