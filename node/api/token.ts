import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { writeFileAtomic } from '../../src/util/atomic-write.ts'
import { PermagentError } from '../../src/util/errors.ts'

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

export async function readApiToken (file: string): Promise<string> {
  await stat(file)
  const token = (await readFile(file, 'utf8')).trim()
  if (!/^[A-Za-z0-9_-]{32,128}$/.test(token)) throw new PermagentError('ERR_API_TOKEN', `${file} does not hold a valid API token; delete it and restart the daemon to make a new one`)
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
