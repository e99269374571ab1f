import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalModel, argmax } from '../../src/inference/index.ts'
import { runCli } from '../helpers/cli.ts'
import { tempDir } from '../model/fixtures.ts'

test('permagent model synth/import/list/info/rm, run --json --dump-logits, chat', async () => {
  const dir = await tempDir('permagent-cli-model-')
  try {
    const data = join(dir.path, 'data')
    const ckpt = join(dir.path, 'ckpt')
    const ok = async (args: string[], input?: string) => {
      const result = await runCli([...args, '--data-dir', data], { input })
      assert.equal(result.code, 0, `permagent ${args.join(' ')}: ${result.stderr}`)
      return result.stdout
    }
    await ok(['model', 'synth', '--shape', 'tiny', '--layers', '3', '--out', ckpt, '--seed', '5'])
    const imported = JSON.parse(await ok(['model', 'import', ckpt, '--name', 'tiny', '--json']))
    assert.equal(imported.layers, 3)
    const listed = JSON.parse(await ok(['model', 'list', '--json']))
    assert.deepEqual(listed.map((m: { name: string }) => m.name), ['tiny'])
    const info = JSON.parse(await ok(['model', 'info', 'tiny', '--verify', '--json']))
    assert.equal(info.spec.numKvHeads, 4)
    assert.equal(info.verified, true)

    const logitsFile = join(dir.path, 'logits.jsonl')
    const run = JSON.parse(await ok(['run', 'tiny', '--prompt-ids', '1,2,3', '--max-tokens', '6', '--temperature', '0', '--json', '--dump-logits', logitsFile]))
    assert.ok(Array.isArray(run.tokens) && run.tokens.length > 0 && run.tokens.length <= 6)
    assert.equal(typeof run.text, 'string')
    const rows = (await readFile(logitsFile, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as number[])
    // prompt positions plus every generated token that was fed back (all but the last)
    assert.equal(rows.length, 3 + run.tokens.length - 1)
    assert.equal(rows[0].length, 256)
    for (let i = 0; i < run.tokens.length; i++) assert.equal(run.tokens[i], argmax(Float32Array.from(rows[i + 2])))
    // The library agrees with the CLI, split or not.
    const local = await LocalModel.open({ dataDir: data, name: 'tiny', splits: [1, 2], threads: 1 })
    const again = await local.generate({ promptIds: [1, 2, 3], maxTokens: 6, stopTokens: local.manifest.spec.eosTokenIds })
    await local.close()
    assert.deepEqual(again.tokens, run.tokens)
    const split = JSON.parse(await ok(['run', 'tiny', '--prompt-ids', '1,2,3', '--max-tokens', '6', '--temperature', '0', '--split', '1,2', '--json']))
    assert.deepEqual(split.tokens, run.tokens)

    const text = await ok(['run', 'tiny', 't10 t11', '--max-tokens', '4', '--stop-ids', '0'])
    assert.match(text, /^(t\d+ ?)+\n$/)
    const chat = await ok(['chat', 'tiny', '--max-tokens', '3', '--temperature', '0', '--stop-ids', '0'], 't5 t6\nt7\n')
    assert.equal(chat.trim().split('\n').length, 2)

    await writeFile(join(ckpt, 'config.json'), JSON.stringify({ model_type: 'bert' }))
    const refused = await runCli(['model', 'import', ckpt, '--name', 'bad', '--data-dir', data])
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, /^error: model_type "bert" is not supported/)
    assert.deepEqual(JSON.parse(await ok(['model', 'list', '--json'])).map((m: { name: string }) => m.name), ['tiny'])
    const usage = await runCli(['run', 'tiny', '--data-dir', data])
    assert.equal(usage.code, 2)
    await ok(['model', 'rm', 'tiny'])
    assert.deepEqual(JSON.parse(await ok(['model', 'list', '--json'])), [])
    const missing = await runCli(['run', 'tiny', '--prompt-ids', '1', '--data-dir', data])
    assert.match(missing.stderr, /error: no model named "tiny"/)
  } finally {
    await dir.cleanup()
  }
})
