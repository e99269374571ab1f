import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  brainIdFromPublicKey, domainSeparated, generateEd25519, identityFromKeyPair, KeyFileError,
  loadOrCreateKeyFile, readKeyFile, SIGNATURE_CONTEXTS, verifySignature
} from '../../src/identity/index.ts'

async function tempDir (): Promise<string> {
  return await mkdtemp(join(tmpdir(), 'permagent-identity-'))
}

test('a created key file is 0600 and reloads to the same peer id and brain id', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'identity.key')
  const first = await loadOrCreateKeyFile(file)
  assert.equal(first.created, true)
  assert.equal((await stat(file)).mode & 0o777, 0o600)
  const second = await loadOrCreateKeyFile(file)
  assert.equal(second.created, false)
  const a = await identityFromKeyPair(first.pair)
  const b = await identityFromKeyPair(second.pair)
  assert.equal(a.peerId.toString(), b.peerId.toString())
  assert.equal(a.brainId, b.brainId)
  assert.equal(a.brainId, brainIdFromPublicKey(first.pair.publicKey))
  assert.match(a.brainId, /^[0-9a-f]{64}$/)
  // the libp2p peer id embeds the same Ed25519 public key
  assert.deepEqual(a.peerId.publicKey?.raw, first.pair.publicKey)
})

test('signatures are bound to their context', async () => {
  const identity = await identityFromKeyPair(generateEd25519())
  const message = new TextEncoder().encode('hello')
  const signature = identity.sign(SIGNATURE_CONTEXTS.shard, message)
  assert.equal(verifySignature(identity.publicKey, SIGNATURE_CONTEXTS.shard, message, signature), true)
  assert.equal(verifySignature(identity.publicKey, SIGNATURE_CONTEXTS.memoryRecord, message, signature), false)
  const tampered = new Uint8Array(message)
  tampered[0] ^= 1
  assert.equal(verifySignature(identity.publicKey, SIGNATURE_CONTEXTS.shard, tampered, signature), false)
  const other = await identityFromKeyPair(generateEd25519())
  assert.equal(verifySignature(other.publicKey, SIGNATURE_CONTEXTS.shard, message, signature), false)
  assert.equal(verifySignature(identity.publicKey, SIGNATURE_CONTEXTS.shard, message, signature.subarray(1)), false)
})

test('domain separation encoding matches the documented vector', () => {
  const bytes = domainSeparated('ctx', new Uint8Array([1, 2]))
  assert.equal(Buffer.from(bytes).toString('hex'), Buffer.from('permagent-sig/1\u0000ctx\u0000').toString('hex') + '0102')
})

test('unreadable, corrupt and world-readable key files are refused with KeyFileError', async (t) => {
  const dir = await tempDir()
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'identity.key')
  await loadOrCreateKeyFile(file)
  const good = await readFile(file, 'utf8')

  await chmod(file, 0o644)
  await assert.rejects(readKeyFile(file), (err: unknown) => err instanceof KeyFileError && /chmod 600/.test(err.message))

  await writeFile(file, '{not json', { mode: 0o600 })
  await chmod(file, 0o600)
  await assert.rejects(readKeyFile(file), (err: unknown) => err instanceof KeyFileError && /not valid JSON/.test(err.message))

  const json = JSON.parse(good)
  json.seed = Buffer.alloc(5).toString('base64')
  await writeFile(file, JSON.stringify(json))
  await assert.rejects(readKeyFile(file), (err: unknown) => err instanceof KeyFileError && /32/.test(err.message))

  json.seed = JSON.parse(good).seed
  json.publicKey = Buffer.alloc(32, 7).toString('base64')
  await writeFile(file, JSON.stringify(json))
  await assert.rejects(readKeyFile(file), (err: unknown) => err instanceof KeyFileError && /does not match/.test(err.message))

  await assert.rejects(readKeyFile(join(dir, 'missing.key')), KeyFileError)
})

test('signature test vector of docs/protocols.md', async () => {
  const seed = new Uint8Array(32).map((_, i) => i + 1)
  const { publicKeyFromSeed } = await import('../../src/identity/ed25519.ts')
  const publicKey = publicKeyFromSeed(seed)
  const identity = await identityFromKeyPair({ seed, publicKey })
  const message = new TextEncoder().encode('hello')
  assert.equal(Buffer.from(publicKey).toString('hex'), '79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664')
  assert.equal(identity.brainId, '65b60673d6ed884bf01c2c222d82ada0740f29ac3355d6a925c81f17f47a27b8')
  assert.equal(identity.peerId.toString(), '12D3KooWJ1TsijH7H5F74hfAD5XishQz3sxrmAtVY37GtNd9CqYf')
  assert.equal(Buffer.from(domainSeparated(SIGNATURE_CONTEXTS.shard, message)).toString('hex'),
    '7065726d6167656e742d7369672f31007065726d6167656e742f7465616d2f73686172642f76310068656c6c6f')
  assert.equal(Buffer.from(identity.sign(SIGNATURE_CONTEXTS.shard, message)).toString('hex'),
    '1819a4ec8f47d58a1b886c379ae64126bfcd6a65c7f9ff0189c47bbc59339a14b4107d870e57370665d23f4e863c994fbea86c137e33e646930b84035b315005')
})
