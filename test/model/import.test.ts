import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile, rm, truncate, writeFile, stat, appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  importModel, listModels, loadManifest, removeModel, verifyModel, openCheckpoint, readSafetensorsHeader, safetensorsHeader,
  modelsDir, f32ToF16, f16ToF32, f32ToBf16, bf16ToF32, type ImportProgress
} from '../../src/model/index.ts'
import { isPermagentError } from '../../src/util/index.ts'
import { tempDir, tinyCheckpoint } from './fixtures.ts'

/** Rewrites a safetensors file's JSON header (data untouched). */
async function rewriteHeader (file: string, mutate: (header: Record<string, any>) => void): Promise<void> {
  const bytes = await readFile(file)
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'))
  mutate(header)
  const json = Buffer.from(JSON.stringify(header))
  const prefix = Buffer.alloc(8)
  prefix.writeBigUInt64LE(BigInt(json.length))
  await writeFile(file, Buffer.concat([prefix, json, bytes.subarray(8 + length)]))
}

async function assertRefused (dataDir: string, source: string, code: string, name = 'refused'): Promise<void> {
  await assert.rejects(importModel(dataDir, { source, name }), (err: unknown) => {
    assert.ok(isPermagentError(err), `expected a PermagentError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    return true
  })
  assert.deepEqual(await listModels(dataDir), [])
  const left = await readdir(modelsDir(dataDir)).catch(() => [])
  assert.deepEqual(left, [], 'nothing is left in the store')
}

test('f16 and bf16 conversions round-trip and round to nearest even', () => {
  const values = Float32Array.from([0, -0, 1, -2.5, 65504, 1e-7, 3.14159, -1e5, 6.1e-5])
  const back = f16ToF32(f32ToF16(values))
  assert.equal(back[2], 1)
  assert.equal(back[3], -2.5)
  assert.equal(back[4], 65504)
  assert.equal(back[7], -Infinity)
  assert.ok(Math.abs(back[6] - 3.14159) < 2e-3)
  assert.ok(Math.abs(back[5] - 1e-7) < 6e-8) // subnormal
  assert.equal(f16ToF32(f32ToF16(Float32Array.of(1 + 2 ** -11)))[0], 1) // tie rounds to even
  const b = bf16ToF32(f32ToBf16(values))
  assert.equal(b[3], -2.5)
  assert.ok(Math.abs(b[6] - 3.14159) < 2e-2)
})

test('safetensors: reads rows of F32/F16/BF16 tensors and validates headers', async () => {
  const dir = await tempDir()
  try {
    const data = Float32Array.from({ length: 12 }, (_, i) => i - 5.5)
    const entries = [
      { name: 'a', dtype: 'F32' as const, shape: [3, 4] },
      { name: 'b', dtype: 'F16' as const, shape: [3, 4] },
      { name: 'c', dtype: 'BF16' as const, shape: [3, 4] }
    ]
    const { bytes } = safetensorsHeader(entries)
    await writeFile(join(dir.path, 'model.safetensors'), Buffer.concat([bytes, Buffer.from(data.buffer), Buffer.from(f32ToF16(data).buffer), Buffer.from(f32ToBf16(data).buffer)]))
    const ck = await openCheckpoint(dir.path)
    for (const name of ['a', 'b', 'c']) {
      assert.deepEqual(Array.from(await ck.readRows(name, 1, 2)), Array.from(data.subarray(4, 12)), name)
    }
    await ck.close()
    await appendFile(join(dir.path, 'model.safetensors'), Buffer.alloc(3))
    await assert.rejects(readSafetensorsHeader(join(dir.path, 'model.safetensors')), { code: 'ERR_CHECKPOINT_OFFSETS' })
    await writeFile(join(dir.path, 'x.safetensors'), Buffer.from([255, 255, 255, 255, 0, 0, 0, 0]))
    await assert.rejects(readSafetensorsHeader(join(dir.path, 'x.safetensors')), { code: 'ERR_CHECKPOINT_HEADER' })
  } finally {
    await dir.cleanup()
  }
})

test('imports a sharded checkpoint: manifest, hashes, list, info, rm, progress', async () => {
  const dir = await tempDir()
  try {
    const source = await tinyCheckpoint(join(dir.path, 'ckpt'), { shardBytes: 200_000, dtype: 'BF16' })
    assert.ok((await readdir(source)).includes('model.safetensors.index.json'))
    const data = join(dir.path, 'data')
    const progress: ImportProgress[] = []
    const manifest = await importModel(data, { source, name: 'tiny', onProgress: (p) => progress.push(p) })
    assert.equal(manifest.spec.numLayers, 4)
    assert.ok(progress.length > 4)
    assert.ok(progress.every((p, i) => i === 0 || p.doneBytes >= progress[i - 1].doneBytes))
    assert.equal(progress.at(-1)?.doneBytes, progress.at(-1)?.totalBytes)
    assert.match(manifest.weightsSha256, /^[0-9a-f]{64}$/)
    for (const file of ['embed.bin', 'layer-000.bin', 'layer-003.bin', 'final.bin', 'model.onnx']) assert.ok(manifest.files[file] !== undefined, file)
    await verifyModel(data, 'tiny')
    const list = await listModels(data)
    assert.deepEqual(list.map((m) => m.name), ['tiny'])
    assert.equal((await loadManifest(data, 'tiny')).weightsSha256, manifest.weightsSha256)
    await assert.rejects(importModel(data, { source, name: 'tiny' }), { code: 'ERR_MODEL_EXISTS' })
    // A flipped byte is caught by verify.
    const layer = join(modelsDir(data), 'tiny', 'layer-001.bin')
    const bytes = await readFile(layer)
    bytes[100] ^= 1
    await writeFile(layer, bytes)
    await assert.rejects(verifyModel(data, 'tiny'), { code: 'ERR_MODEL_STORE_CORRUPT' })
    await removeModel(data, 'tiny')
    assert.deepEqual(await listModels(data), [])
    await assert.rejects(removeModel(data, 'tiny'), { code: 'ERR_MODEL_NOT_FOUND' })
    await assert.rejects(importModel(data, { source, name: '../evil' }), { code: 'ERR_INVALID_INPUT' })
  } finally {
    await dir.cleanup()
  }
})

test('import refuses bad checkpoints with a typed error and leaves nothing behind', async (t) => {
  const dir = await tempDir()
  const data = join(dir.path, 'data')
  let n = 0
  const fresh = async (options = {}) => await tinyCheckpoint(join(dir.path, `ckpt-${n++}`), { shardBytes: 200_000, ...options })
  const shards = async (source: string) => (await readdir(source)).filter((f) => f.endsWith('.safetensors')).sort()
  try {
    await t.test('unsupported architecture', async () => {
      const source = await fresh()
      const config = JSON.parse(await readFile(join(source, 'config.json'), 'utf8'))
      await writeFile(join(source, 'config.json'), JSON.stringify({ ...config, model_type: 'gpt_neox', architectures: ['GPTNeoXForCausalLM'] }))
      await assertRefused(data, source, 'ERR_UNSUPPORTED_MODEL')
    })
    await t.test('bad config', async () => {
      const source = await fresh()
      const config = JSON.parse(await readFile(join(source, 'config.json'), 'utf8'))
      await writeFile(join(source, 'config.json'), JSON.stringify({ ...config, num_key_value_heads: 3 }))
      await assertRefused(data, source, 'ERR_MODEL_CONFIG')
      await rm(join(source, 'config.json'))
      await assertRefused(data, source, 'ERR_MODEL_CONFIG')
    })
    await t.test('config disagreeing with tensor shapes', async () => {
      const source = await fresh()
      const config = JSON.parse(await readFile(join(source, 'config.json'), 'utf8'))
      await writeFile(join(source, 'config.json'), JSON.stringify({ ...config, intermediate_size: 192 }))
      await assertRefused(data, source, 'ERR_CHECKPOINT_SHAPE')
    })
    await t.test('missing shard', async () => {
      const source = await fresh()
      const files = await shards(source)
      assert.ok(files.length >= 3)
      await rm(join(source, files[1]))
      await assertRefused(data, source, 'ERR_CHECKPOINT_MISSING')
    })
    await t.test('tensor listed in the index but absent', async () => {
      const source = await fresh()
      const index = JSON.parse(await readFile(join(source, 'model.safetensors.index.json'), 'utf8'))
      const file = (await shards(source))[0]
      await rewriteHeader(join(source, file), (h) => {
        const name = Object.keys(h).find((k) => k.endsWith('norm.weight') && index.weight_map[k] === file) as string
        assert.ok(name !== undefined)
        // Renaming keeps the bytes valid but the index now points at a tensor that is not there.
        h[name.replace('norm', 'nrm')] = h[name]
        delete h[name]
      })
      await assertRefused(data, source, 'ERR_CHECKPOINT_HEADER')
    })
    await t.test('truncated shard', async () => {
      const source = await fresh()
      const file = join(source, (await shards(source))[1])
      await truncate(file, (await stat(file)).size - 100)
      await assertRefused(data, source, 'ERR_CHECKPOINT_TRUNCATED')
    })
    await t.test('offsets disagreeing with dtype x shape', async () => {
      const source = await fresh()
      await rewriteHeader(join(source, (await shards(source))[0]), (h) => {
        const name = Object.keys(h).find((k) => k !== '__metadata__') as string
        h[name].data_offsets[1] -= 4
      })
      await assertRefused(data, source, 'ERR_CHECKPOINT_OFFSETS')
    })
    await t.test('overlapping offsets', async () => {
      const source = await fresh()
      await rewriteHeader(join(source, (await shards(source))[0]), (h) => {
        const names = Object.keys(h).filter((k) => k !== '__metadata__' && h[k].shape.length === 1)
        assert.ok(names.length >= 2)
        const [a, b] = names.sort((x, y) => h[x].data_offsets[0] - h[y].data_offsets[0])
        h[b].data_offsets = [...h[a].data_offsets]
      })
      await assertRefused(data, source, 'ERR_CHECKPOINT_OFFSETS')
    })
    await t.test('unsupported dtype', async () => {
      const source = await fresh()
      await rewriteHeader(join(source, (await shards(source))[0]), (h) => {
        const name = Object.keys(h).find((k) => k !== '__metadata__') as string
        h[name].dtype = 'I32'
      })
      await assertRefused(data, source, 'ERR_CHECKPOINT_DTYPE')
    })
    await t.test('dtype mismatch between weight matrices', async () => {
      const source = await fresh({ dtype: 'BF16' })
      const files = await shards(source)
      await rewriteHeader(join(source, files[files.length - 1]), (h) => {
        const name = Object.keys(h).find((k) => k !== '__metadata__' && h[k].shape.length === 2) as string
        h[name].dtype = 'F16'
      })
      await assertRefused(data, source, 'ERR_CHECKPOINT_DTYPE')
    })
    await t.test('a tokenizer that does not load', async () => {
      const source = await fresh()
      await writeFile(join(source, 'tokenizer.json'), '{"model": ')
      await assertRefused(data, source, 'ERR_MODEL_CONFIG')
    })
  } finally {
    await dir.cleanup()
  }
})
