import { test } from 'node:test'
import assert from 'node:assert/strict'
import { STORIES_DIR, STORIES_SKIP } from '../model/fixtures.ts'
import { QUANTIZATIONS } from '../../src/usxf/index.ts'
import { generate, migrationWorld } from './fixtures.ts'

test('stories260K: sessions migrated at every quantization continue (exactly for none and f16)', { skip: STORIES_SKIP }, async (t) => {
  const world = await migrationWorld([256, 256], { checkpoint: STORIES_DIR })
  try {
    const [a, b] = world.nodes
    const prompt = [1, ...(await generate(a.model, a.model.newSession(), [1], 24)).slice(0, 23)]
    const expected = (await generate(a.model, a.model.newSession(), prompt, 8 + 32)).slice(8)
    const headDim = a.model.manifest.spec.headDim
    const runs = [...QUANTIZATIONS.map((quantization) => ({ quantization, quantGroup: 32 })), { quantization: 'int8-block' as const, quantGroup: headDim }]
    for (const { quantization, quantGroup } of runs) {
      const id = `stories-${quantization}-${quantGroup}`
      const session = a.model.newSession()
      const generated = await generate(a.model, session, prompt, 8)
      a.service.sessions.add(id, a.model, session, { pendingToken: generated[7] })
      const result = await a.service.migrate(id, world.swarm.nodes[1].mesh.peerId, { quantization, quantGroup, mode: 'always', fidelityTokens: 16 })
      const continued = await generate(b.model, b.service.sessions.require(id).session, [generated[7]], 32)
      let agree = 0
      while (agree < 32 && continued[agree] === expected[agree]) agree++
      t.diagnostic(`${quantization}${quantization === 'int8-block' ? ` (groups of ${quantGroup})` : ''}: ${result.streamBytes} bytes for ${result.positions} positions (${result.rawBytes} at f32); fidelity ${result.fidelity?.verdict} ${result.fidelity?.matching}/${result.fidelity?.compared}; continuation agrees for ${agree}/32`)
      if (quantization !== 'int8-block') {
        assert.equal(result.fidelity?.verdict, 'exact')
        assert.deepEqual(continued, expected)
      }
      b.service.sessions.remove(id)
    }
  } finally {
    await world.close()
  }
})
