import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createBrain } from '../../src/brain/index.ts'
import { generateEd25519, identityFromKeyPair } from '../../src/identity/index.ts'
import { waitFor } from '../../src/util/index.ts'
import { tempDir } from './helpers.ts'

const LINES = 12_000
const BATCH = 500

test('kill -9 during a large import: every acknowledged memory survives and verify passes', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'import.jsonl')
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet']
  const lines: string[] = []
  for (let i = 0; i < LINES; i++) {
    lines.push(JSON.stringify({ key: `k${i}`, content: `memory ${i} mentions ${words[i % 10]} and ${words[(i * 7) % 10]} with detail ${i * 31 % 997}` }))
  }
  await writeFile(file, lines.join('\n') + '\n')
  const pair = generateEd25519()
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'import-child.ts'), dir, file,
    Buffer.from(pair.seed).toString('hex'), Buffer.from(pair.publicKey).toString('hex'), String(BATCH)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let acknowledged = 0
  let finished = false
  let buffered = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk
    const parts = buffered.split('\n')
    buffered = parts.pop() ?? ''
    for (const line of parts) {
      if (line.startsWith('ack ')) acknowledged = Number(line.slice(4))
      if (line.startsWith('done')) finished = true
    }
  })
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => { resolve(signal) }))
  await waitFor(() => acknowledged >= 3 * BATCH || finished, { timeoutMs: 60_000, intervalMs: 5, what: 'the child to commit three batches' })
  child.kill('SIGKILL')
  assert.equal(await exited, 'SIGKILL')
  // lines read after the kill signal was sent may have been acknowledged too: count them all
  for (const line of buffered.split('\n')) if (line.startsWith('ack ')) acknowledged = Number(line.slice(4))
  assert.equal(finished, false, 'the import should still have been running when killed')

  const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(pair) })
  await brain.start()
  t.after(async () => { await brain.stop() })
  const report = brain.verify()
  assert.deepEqual(report.problems, [])
  const total = brain.stats().memories.total
  assert.ok(total >= acknowledged, `${total} memories stored, ${acknowledged} acknowledged`)
  assert.equal(total % BATCH, 0, 'only whole batches are stored')
  for (let i = 0; i < acknowledged; i++) assert.equal(brain.history(`k${i}`).length, 1)
  // the import can be resumed: the whole file again stores the rest and skips what is there
  const summary = await brain.importFile(file)
  assert.equal(summary.memories, LINES - total)
  assert.equal(summary.skipped, total)
  assert.equal(brain.verify().ok, true)
})

test('kill -9 right after single writes: the memories and their full-text index survive', async (t) => {
  const dir = await tempDir(t)
  const pair = generateEd25519()
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'remember-then-die.ts'), dir,
    Buffer.from(pair.seed).toString('hex'), Buffer.from(pair.publicKey).toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { output += chunk })
  const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, s) => { resolve(s) }))
  assert.equal(signal, 'SIGKILL')
  assert.match(output, /ack 5/)
  const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(pair) })
  await brain.start()
  t.after(async () => { await brain.stop() })
  assert.equal(brain.recall('zeppelin hangar', { limit: 10 }).hits.length, 5)
  assert.deepEqual(brain.verify().problems, [])
})
