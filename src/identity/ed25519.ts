import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { SignatureError } from './errors.ts'

export const PUBLIC_KEY_BYTES = 32
export const SEED_BYTES = 32
export const SIGNATURE_BYTES = 64

// DER prefixes that wrap raw Ed25519 keys as PKCS#8 / SPKI, so node:crypto (OpenSSL) can use them.
// node:crypto verifies ~10x faster than pure-JS Ed25519 on these machines, which matters for
// bulk shard verification.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

export interface Ed25519KeyPair {
  seed: Uint8Array
  publicKey: Uint8Array
}

export function generateEd25519 (): Ed25519KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' })
  const spki = publicKey.export({ format: 'der', type: 'spki' })
  return {
    seed: new Uint8Array(pkcs8.subarray(PKCS8_PREFIX.length)),
    publicKey: new Uint8Array(spki.subarray(SPKI_PREFIX.length))
  }
}

export function privateKeyObject (seed: Uint8Array): KeyObject {
  if (seed.length !== SEED_BYTES) throw new SignatureError(`an Ed25519 seed is ${SEED_BYTES} bytes, got ${seed.length}`)
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' })
}

export function publicKeyFromSeed (seed: Uint8Array): Uint8Array {
  const spki = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' })
  return new Uint8Array(spki.subarray(SPKI_PREFIX.length))
}

// Parsing a DER public key costs about as much as a verification, so keys are cached. The cache is
// bounded; a team has at most thousands of authors.
const publicKeyCache = new Map<string, KeyObject>()
const PUBLIC_KEY_CACHE_LIMIT = 4096

export function publicKeyObject (publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== PUBLIC_KEY_BYTES) throw new SignatureError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, got ${publicKey.length}`)
  const cacheKey = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64')
  let key = publicKeyCache.get(cacheKey)
  if (key == null) {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' })
    if (publicKeyCache.size >= PUBLIC_KEY_CACHE_LIMIT) {
      const oldest = publicKeyCache.keys().next().value
      if (oldest != null) publicKeyCache.delete(oldest)
    }
    publicKeyCache.set(cacheKey, key)
  }
  return key
}

export function signRaw (privateKey: KeyObject, message: Uint8Array): Uint8Array {
  return new Uint8Array(sign(null, message, privateKey))
}

export function verifyRaw (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== PUBLIC_KEY_BYTES) return false
  try {
    return verify(null, message, publicKeyObject(publicKey), signature)
  } catch {
    return false
  }
}
