import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MeshModel } from '../../src/split/index.ts'
import { STORIES_DIR, STORIES_SKIP } from '../model/fixtures.ts'
import { SPANS, splitWorld } from './fixtures.ts'

test('stories260K, two honest servers per span, verification at rate 1: no false fault with f32, f16 or int8-block activations', { skip: STORIES_SKIP }, async (t) => {
  // nodes 1-3 and 4-6 serve the three middle spans: every hop has a second server
  const world = await splitWorld([...SPANS, ...SPANS], { checkpoint: STORIES_DIR, model: 'stories' })
  try {
    for (const quantization of ['none', 'f16', 'int8-block'] as const) {
      const chain = SPANS.map((s, i) => ({ ...s, peers: [world.peer(i + 1), world.peer(i + 4)] }))
      const plain = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: 'stories', headLayers: 1, tailLayers: 1, chain, quantization, threads: 1 })
      const checked = await MeshModel.open({ libp2p: world.swarm.nodes[0].mesh.libp2p, dataDir: world.dataDir, name: 'stories', headLayers: 1, tailLayers: 1, chain, quantization, threads: 1, verify: { rate: 1, canaries: 2 } })
      try {
        const request = { promptIds: [1, 403, 106, 298], maxTokens: 32, stopTokens: [] }
        const expected = await plain.generate(request)
        const result = await checked.generate(request)
        const report = result.verification
        assert.ok(report !== undefined)
        t.diagnostic(`${quantization}: ${report.hops.map((h) => h.checks).join('/')} checks per hop, largest difference/allowance ${Math.max(...report.hops.map((h) => h.maxPassingRatio)).toFixed(3)}, ${report.extraRows} extra rows, ${report.extraBytes} extra bytes, faults ${result.faults?.length}`)
        assert.deepEqual(result.faults, [], quantization)
        assert.deepEqual(result.tokens, expected.tokens, quantization)
        for (const hop of report.hops) {
          assert.equal(hop.checks, 32, `${quantization}: hop ${hop.hop} checked at every step`)
          assert.equal(hop.rowsChecked, 4 + 31)
          assert.equal(hop.canaries, 2)
        }
      } finally {
        await plain.close()
        await checked.close()
      }
    }
  } finally {
    await world.close()
  }
})
