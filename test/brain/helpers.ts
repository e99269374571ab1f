import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { createBrain, type Brain, type BrainOptions } from '../../src/brain/index.ts'
import { generateEd25519, identityFromKeyPair, type Identity } from '../../src/identity/index.ts'

export interface TestBrain {
  brain: Brain
  dir: string
  identity: Identity
  /** The brain's clock: set it to move time. */
  clock: { now: number }
  reopen: () => Promise<Brain>
}

export async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'permagent-brain-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

export async function openBrain (t: TestContext, options: Partial<BrainOptions> = {}): Promise<TestBrain> {
  const dir = await tempDir(t)
  const identity = options.identity ?? await identityFromKeyPair(generateEd25519())
  const clock = { now: Date.parse('2024-01-01T00:00:00Z') }
  const make = (): Brain => createBrain({ dataDir: dir, identity, clock: () => clock.now, ...options })
  const holder: TestBrain = {
    brain: make(),
    dir,
    identity,
    clock,
    reopen: async () => {
      await holder.brain.stop()
      holder.brain = make()
      await holder.brain.start()
      return holder.brain
    }
  }
  await holder.brain.start()
  t.after(async () => { await holder.brain.stop() })
  return holder
}

export const DAY = 86_400_000
