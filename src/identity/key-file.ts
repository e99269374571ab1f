import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { writeFileAtomic } from '../util/atomic-write.ts'
import { generateEd25519, publicKeyFromSeed, SEED_BYTES, type Ed25519KeyPair } from './ed25519.ts'
import { KeyFileError } from './errors.ts'

export const KEY_FILE_VERSION = 1
const MAX_KEY_FILE_BYTES = 4096

interface KeyFileJson {
  version: number
  type: 'ed25519'
  seed: string
  publicKey: string
}

/**
 * Reads the node's Ed25519 key. The file is JSON with the base64 seed; it must not be readable by
 * group or others (like ssh, we refuse a key file others can read).
 */
export async function readKeyFile (file: string): Promise<Ed25519KeyPair> {
  let info
  try {
    info = await stat(file)
  } catch (err) {
    throw new KeyFileError(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err })
  }
  if (!info.isFile()) throw new KeyFileError(file, 'is not a regular file')
  if (info.size > MAX_KEY_FILE_BYTES) throw new KeyFileError(file, `is ${info.size} bytes; a key file is under ${MAX_KEY_FILE_BYTES}`)
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) {
    throw new KeyFileError(file, `has mode ${(info.mode & 0o777).toString(8)}; it must be readable by its owner only (chmod 600)`)
  }
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new KeyFileError(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err })
  }
  let json: Partial<KeyFileJson>
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new KeyFileError(file, 'is not valid JSON', { cause: err })
  }
  if (json == null || typeof json !== 'object') throw new KeyFileError(file, 'is not a JSON object')
  if (json.version !== KEY_FILE_VERSION) throw new KeyFileError(file, `has version ${String(json.version)}; this node reads version ${KEY_FILE_VERSION}`)
  if (json.type !== 'ed25519') throw new KeyFileError(file, `has key type ${String(json.type)}; only ed25519 is supported`)
  if (typeof json.seed !== 'string') throw new KeyFileError(file, 'has no "seed"')
  const seed = new Uint8Array(Buffer.from(json.seed, 'base64'))
  if (seed.length !== SEED_BYTES) throw new KeyFileError(file, `"seed" decodes to ${seed.length} bytes; expected ${SEED_BYTES}`)
  const publicKey = publicKeyFromSeed(seed)
  if (typeof json.publicKey === 'string' && Buffer.from(json.publicKey, 'base64').compare(Buffer.from(publicKey)) !== 0) {
    throw new KeyFileError(file, '"publicKey" does not match "seed"; the file is corrupt')
  }
  return { seed, publicKey }
}

export async function writeKeyFile (file: string, pair: Ed25519KeyPair): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  const json: KeyFileJson = {
    version: KEY_FILE_VERSION,
    type: 'ed25519',
    seed: Buffer.from(pair.seed).toString('base64'),
    publicKey: Buffer.from(pair.publicKey).toString('base64')
  }
  await writeFileAtomic(file, JSON.stringify(json, null, 2) + '\n', { mode: 0o600 })
}

/** Loads the key file, creating a new key if none exists yet. Returns whether it was created. */
export async function loadOrCreateKeyFile (file: string): Promise<{ pair: Ed25519KeyPair, created: boolean }> {
  try {
    await stat(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      const pair = generateEd25519()
      await writeKeyFile(file, pair)
      return { pair, created: true }
    }
    throw new KeyFileError(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err })
  }
  return { pair: await readKeyFile(file), created: false }
}
