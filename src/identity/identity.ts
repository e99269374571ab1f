import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import { brainIdFromPublicKey } from './brain-id.ts'
import { domainSeparated } from './domain.ts'
import { privateKeyObject, signRaw, verifyRaw, type Ed25519KeyPair } from './ed25519.ts'

/**
 * A node's identity: one Ed25519 key serves as the libp2p peer identity, the brain id and the
 * signer of everything the node publishes.
 */
export interface Identity {
  readonly publicKey: Uint8Array
  readonly brainId: string
  readonly peerId: PeerId
  /** The same key in libp2p's form, for the libp2p node. */
  readonly libp2pPrivateKey: PrivateKey
  /** Signs `message` under a domain-separation context (see SIGNATURE_CONTEXTS). */
  sign: (context: string, message: Uint8Array) => Uint8Array
}

export async function identityFromKeyPair (pair: Ed25519KeyPair): Promise<Identity> {
  const libp2pPrivateKey = await generateKeyPairFromSeed('Ed25519', pair.seed)
  const peerId = peerIdFromPrivateKey(libp2pPrivateKey)
  const keyObject: KeyObject = privateKeyObject(pair.seed)
  return {
    publicKey: pair.publicKey,
    brainId: brainIdFromPublicKey(pair.publicKey),
    peerId,
    libp2pPrivateKey,
    sign: (context, message) => signRaw(keyObject, domainSeparated(context, message))
  }
}

/** Verifies a signature made by `Identity.sign` with the same context. */
export function verifySignature (publicKey: Uint8Array, context: string, message: Uint8Array, signature: Uint8Array): boolean {
  return verifyRaw(publicKey, domainSeparated(context, message), signature)
}
