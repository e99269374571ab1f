import assert from 'node:assert/strict'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { generateEd25519, identityFromKeyPair, type Identity } from '../../src/identity/index.ts'
import { SkillError } from '../../src/skills/index.ts'

export async function newIdentity (): Promise<Identity> {
  return await identityFromKeyPair(generateEd25519())
}

export async function tempDir (prefix = 'permagent-skill-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

export function skillMd (fields: { name?: string, version?: string, description?: string, runner?: string, entry?: string, extra?: string, body?: string } = {}): string {
  const lines = ['---']
  if (fields.name !== '') lines.push(`name: ${fields.name ?? 'greet'}`)
  if (fields.version !== '') lines.push(`version: ${fields.version ?? '1.0.0'}`)
  lines.push(`description: ${fields.description ?? 'Greets someone by name'}`)
  lines.push(`runner: ${fields.runner ?? 'bash'}`)
  lines.push(`entry: ${fields.entry ?? 'run.sh'}`)
  lines.push('inputs:', '  - name: who', '    type: string', '    required: true', '    description: whom to greet')
  if (fields.extra != null) lines.push(fields.extra)
  lines.push('---', '', fields.body ?? 'Run `run.sh WHO`.', '')
  return lines.join('\n')
}

/** Writes a skill directory: SKILL.md plus files (path → content). */
export async function writeSkill (dir: string, options: { md?: string, files?: Record<string, string | Uint8Array>, name?: string, version?: string } = {}): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'SKILL.md'), options.md ?? skillMd({ name: options.name, version: options.version }))
  const files = options.files ?? { 'run.sh': '#!/bin/sh\necho "hello $1"\n', 'lib/words.txt': 'hello\nhi\n' }
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), content, { mode: path.endsWith('.sh') ? 0o755 : 0o644 })
  }
  return dir
}

/** Asserts that an operation is refused with a SkillError of this code (and message). */
export async function assertRefused (promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SkillError, `expected a SkillError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    if (pattern != null) assert.match(err.message, pattern)
    return true
  })
}
