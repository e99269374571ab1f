import { mkdtemp, rm } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { synthesizeModel, type SynthOptions } from '../../src/model/index.ts'

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const STORIES_DIR = resolve(REPO_ROOT, '..', 'shared', 'models', 'stories260K')
export const STORIES_PRESENT = existsSync(join(STORIES_DIR, 'model.safetensors'))
export const STORIES_SKIP = STORIES_PRESENT ? false : `stories260K is absent (expected at ${STORIES_DIR})`

export interface TempDir {
  path: string
  cleanup: () => Promise<void>
}

export async function tempDir (prefix = 'permagent-model-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, cleanup: async () => { await rm(path, { recursive: true, force: true }) } }
}

/** Writes a tiny synthetic checkpoint (4 layers, 8 query / 4 kv heads unless overridden). */
export async function tinyCheckpoint (dir: string, options: Partial<SynthOptions> = {}): Promise<string> {
  await synthesizeModel({ shape: 'tiny', out: dir, seed: 7, ...options })
  return dir
}

export function maxAbsDiff (a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`)
  let max = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i])
    if (!(d <= max)) max = d
  }
  return max
}
