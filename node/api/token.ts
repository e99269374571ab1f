import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readApiToken } from '../../src/client/index.ts'
import { writeFileAtomic } from '../../src/util/atomic-write.ts'
import type { PermagentError } from '../../src/util/errors.ts'

/** Reads the control API's bearer token, creating it (0600) if the data dir has none yet. */
export async function loadOrCreateApiToken (file: string): Promise<string> {
  try {
    return await readApiToken(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as PermagentError).code !== 'ENOENT') throw err
  }
  const token = randomBytes(32).toString('base64url')
  await writeFileAtomic(file, token + '\n', { mode: 0o600 })
  return token
}


/** Compares a presented bearer token in constant time. */
export function tokenMatches (expected: string, header: string | undefined): boolean {
  if (header == null) return false
  const match = /^Bearer\s+(\S+)$/i.exec(header)
  if (match == null) return false
  const presented = Buffer.from(match[1])
  const wanted = Buffer.from(expected)
  return presented.length === wanted.length && timingSafeEqual(presented, wanted)
}
