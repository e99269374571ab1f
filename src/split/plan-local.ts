import { Stage } from '../inference/index.ts'
import type { ModelManifest } from '../model/index.ts'

/**
 * Measures this node's part of a split run for `model plan --measure-local`: the head stage
 * (embeddings and the first layers) and the tail stage (the last layers, final norm and LM head),
 * one decode row each, best of a few runs after a warm-up. Loads the weights a mesh run would load.
 */
export async function measureLocalStages (dataDir: string, manifest: ModelManifest, options: { headLayers: number, tailLayers: number, threads?: number, rounds?: number }): Promise<{ headMs: number, tailMs: number }> {
  const layers = manifest.spec.numLayers
  const rounds = options.rounds ?? 4
  const stageOptions = { maxContext: Math.min(manifest.spec.maxPositions, rounds + 1), threads: options.threads, spinning: false }
  const best = async (stage: Stage, input: { tokens?: number[], hidden?: Float32Array }): Promise<number> => {
    const cache = stage.newCache()
    let fastest = Infinity
    for (let i = 0; i < rounds; i++) {
      const started = performance.now()
      await stage.run(input, cache)
      if (i > 0 || rounds === 1) fastest = Math.min(fastest, performance.now() - started)
    }
    return fastest
  }
  const head = await Stage.open(dataDir, manifest, { start: 0, end: options.headLayers, embed: true, lmHead: false }, stageOptions)
  let headMs: number
  try {
    headMs = await best(head, { tokens: [manifest.spec.bosTokenId ?? 0] })
  } finally {
    await head.close()
  }
  const tail = await Stage.open(dataDir, manifest, { start: layers - options.tailLayers, end: layers, embed: false, lmHead: true }, stageOptions)
  try {
    return { headMs, tailMs: await best(tail, { hidden: new Float32Array(manifest.spec.hiddenSize).fill(0.01) }) }
  } finally {
    await tail.close()
  }
}
