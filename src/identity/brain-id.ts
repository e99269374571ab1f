import { createHash } from 'node:crypto'

/** A brain id is the hex SHA-256 of the brain's Ed25519 public key: stable, short to compare, and derivable by anyone holding the key. */
export function brainIdFromPublicKey (publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex')
}

export function isBrainId (value: string): boolean {
  return /^[0-9a-f]{64}$/.test(value)
}
