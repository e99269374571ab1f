import { createHash, hash } from 'node:crypto'
// the modules themselves, not the identity index: the verification workers load this file, and
// start faster without key files and the rest
import { domainSeparated, SIGNATURE_CONTEXTS } from '../identity/domain.ts'
import { verifyRaw } from '../identity/ed25519.ts'
import type { Identity } from '../identity/index.ts'
import { Shard as ShardWire, ShardContent } from '../pb/team.ts'
import { ShardRejectedError } from './errors.ts'
import { readCanonicalContent } from './shard-content.ts'
import type { HlcTime } from './hlc.ts'

export const SHARD_FORMAT_VERSION = 1
/** A whole shard on the wire (content + signature + framing); larger ones are refused unread. */
export const MAX_SHARD_BYTES = 64 * 1024

export const SHARD_KINDS = { memory: 1, relation: 2, retraction: 3, dispute: 4, membership: 5, skill: 6 } as const
export type ShardKind = keyof typeof SHARD_KINDS
const KIND_BY_NUMBER = new Map<number, ShardKind>(Object.entries(SHARD_KINDS).map(([name, n]) => [n, name as ShardKind]))

/** Shared visibilities; private memories never become shards (see toShardVisibility). */
export const SHARD_VISIBILITIES = { team: 1, org: 2, public: 3 } as const
export type ShardVisibility = keyof typeof SHARD_VISIBILITIES
const VISIBILITY_BY_NUMBER = new Map<number, ShardVisibility>(Object.entries(SHARD_VISIBILITIES).map(([name, n]) => [n, name as ShardVisibility]))

/** A decoded, verified shard. */
export interface Shard {
  /** Hex SHA-256 of `content`. */
  id: string
  teamId: string
  /** The author's public key (hex) and brain id. */
  authorKey: string
  author: string
  kind: ShardKind
  body: Uint8Array
  visibility: ShardVisibility
  supersedes: string[]
  hlc: HlcTime
  /** The canonical content bytes that were hashed and signed. */
  content: Uint8Array
  signature: Uint8Array
  /** The whole wire encoding (content + signature). */
  bytes: Uint8Array
}

export interface ShardDraft {
  teamId: string
  kind: ShardKind
  body: Uint8Array
  visibility: ShardVisibility
  supersedes?: string[]
  hlc: HlcTime
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function fromHex (value: string, bytes: number, what: string): Uint8Array<ArrayBuffer> {
  if (!new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(value)) throw new ShardRejectedError('ERR_SHARD_MALFORMED', `${what} must be ${bytes} bytes of lowercase hex`)
  return new Uint8Array(Buffer.from(value, 'hex'))
}

export function shardIdOf (content: Uint8Array): string {
  // the one-shot hash: no Hash object per shard (it is on the path of every shard checked)
  return hash('sha256', content, 'hex')
}

// What the author signed: the content, domain-separated for shards. The separation prefix is the
// same for every shard, so it is built once (by domainSeparated itself, the one definition of it).
const SHARD_SIGNING_PREFIX = domainSeparated(SIGNATURE_CONTEXTS.shard, new Uint8Array(0))
function shardSigningBytes (content: Uint8Array): Uint8Array {
  const out = new Uint8Array(SHARD_SIGNING_PREFIX.byteLength + content.byteLength)
  out.set(SHARD_SIGNING_PREFIX, 0)
  out.set(content, SHARD_SIGNING_PREFIX.byteLength)
  return out
}

// a team has few authors and every shard names one: hash each key once
const brainIdCache = new Map<string, string>()
function brainIdOfKey (publicKeyHex: string): string {
  let id = brainIdCache.get(publicKeyHex)
  if (id === undefined) {
    id = createHash('sha256').update(Buffer.from(publicKeyHex, 'hex')).digest('hex')
    if (brainIdCache.size > 65_536) brainIdCache.clear()
    brainIdCache.set(publicKeyHex, id)
  }
  return id
}

/** Builds, signs and encodes a shard authored by `identity`. */
export function createShard (identity: Identity, draft: ShardDraft): Shard {
  const content = ShardContent.encode({
    version: SHARD_FORMAT_VERSION,
    teamId: fromHex(draft.teamId, 32, 'team id'),
    author: new Uint8Array(identity.publicKey),
    kind: SHARD_KINDS[draft.kind],
    body: new Uint8Array(draft.body),
    visibility: SHARD_VISIBILITIES[draft.visibility],
    supersedes: [...(draft.supersedes ?? [])].sort().map((id) => fromHex(id, 32, 'superseded shard id')),
    hlcWallMs: BigInt(draft.hlc.wallMs),
    hlcCounter: draft.hlc.counter
  })
  const signature = identity.sign(SIGNATURE_CONTEXTS.shard, content)
  const bytes = ShardWire.encode({ content, signature: new Uint8Array(signature) })
  if (bytes.byteLength > MAX_SHARD_BYTES) throw new ShardRejectedError('ERR_SHARD_TOO_LARGE', `the shard would be ${bytes.byteLength} bytes; the limit is ${MAX_SHARD_BYTES}`)
  return decodeShard(bytes, { verify: false })
}

export interface DecodeOptions {
  /** false: leave the signature to the caller (default: check it). */
  verify?: boolean
  /**
   * The id the verification pool computed when it decoded these same bytes in full and checked
   * their signature: the hash is not computed again. Only for bytes that passed decodeShard with
   * verify in a worker; every other check still runs.
   */
  checkedId?: string
}

const MAX_WALL_MS = BigInt(Number.MAX_SAFE_INTEGER)

/**
 * The layout ShardWire.encode writes (content, then a 64-byte signature, nothing else), read
 * without the generic decoder; undefined for any other layout, which the generic decoder reads
 * (it accepts the same fields in other orders and skips unknown ones, and so does this node).
 */
function readWireFast (bytes: Uint8Array): { content: Uint8Array, signature: Uint8Array } | undefined {
  if (bytes.byteLength < 2 || bytes[0] !== 0x0a) return undefined
  let length = 0
  let pos = 1
  // the length of the content (at most MAX_SHARD_BYTES: three varint bytes)
  for (let shift = 0; shift < 21; shift += 7) {
    if (pos >= bytes.byteLength) return undefined
    const byte = bytes[pos++]
    length |= (byte & 0x7f) << shift
    if ((byte & 0x80) === 0) {
      const contentEnd = pos + length
      if (contentEnd + 66 !== bytes.byteLength || bytes[contentEnd] !== 0x12 || bytes[contentEnd + 1] !== 64) return undefined
      return { content: bytes.subarray(pos, contentEnd), signature: bytes.subarray(contentEnd + 2) }
    }
  }
  return undefined
}

/**
 * Decodes a shard from the wire and checks what the bytes alone can tell: size, schema,
 * canonical encoding, and (unless verify is false) the signature. Membership, team and clock
 * checks need state and happen in the validator.
 */
export function decodeShard (bytes: Uint8Array, options: DecodeOptions = {}): Shard {
  if (bytes.byteLength > MAX_SHARD_BYTES) throw new ShardRejectedError('ERR_SHARD_TOO_LARGE', `shard is ${bytes.byteLength} bytes; the limit is ${MAX_SHARD_BYTES}`)
  let wire: { content: Uint8Array, signature: Uint8Array }
  try {
    wire = readWireFast(bytes) ?? ShardWire.decode(bytes)
  } catch (err) {
    throw new ShardRejectedError('ERR_SHARD_MALFORMED', `shard does not decode: ${(err as Error).message}`)
  }
  // one encoding per shard (what re-encoding would give, checked while reading), so the id is unambiguous
  const content = readCanonicalContent(wire.content)
  if (content.version !== SHARD_FORMAT_VERSION) throw new ShardRejectedError('ERR_SHARD_MALFORMED', `shard format version ${content.version} is not supported (this node reads ${SHARD_FORMAT_VERSION})`)
  if (content.teamId.byteLength !== 32) throw new ShardRejectedError('ERR_SHARD_MALFORMED', 'team id must be 32 bytes')
  if (content.author.byteLength !== 32) throw new ShardRejectedError('ERR_SHARD_MALFORMED', 'author key must be 32 bytes')
  if (wire.signature.byteLength !== 64) throw new ShardRejectedError('ERR_SHARD_MALFORMED', 'signature must be 64 bytes')
  const kind = KIND_BY_NUMBER.get(content.kind)
  if (kind == null) throw new ShardRejectedError('ERR_SHARD_MALFORMED', `unknown shard kind ${content.kind}`)
  const visibility = VISIBILITY_BY_NUMBER.get(content.visibility)
  if (visibility == null) throw new ShardRejectedError('ERR_SHARD_PRIVATE', `shard visibility ${content.visibility} is not a shared visibility (team, org, public)`)
  if (content.supersedes.length > 64 || content.supersedes.some((id) => id.byteLength !== 32)) throw new ShardRejectedError('ERR_SHARD_MALFORMED', 'supersedes must list at most 64 ids of 32 bytes')
  const sortedSupersedes = content.supersedes.map(hex)
  for (let i = 1; i < sortedSupersedes.length; i++) {
    if (sortedSupersedes[i - 1] >= sortedSupersedes[i]) throw new ShardRejectedError('ERR_SHARD_NON_CANONICAL', 'supersedes must be sorted and unique')
  }
  if (content.hlcWallMs > MAX_WALL_MS) throw new ShardRejectedError('ERR_SHARD_MALFORMED', 'hlc wall time out of range')
  if (options.verify !== false && !verifyRaw(content.author, shardSigningBytes(wire.content), wire.signature)) {
    throw new ShardRejectedError('ERR_SHARD_BAD_SIGNATURE', 'shard signature does not verify')
  }
  const id = options.checkedId ?? shardIdOf(wire.content)
  for (const superseded of sortedSupersedes) {
    if (superseded === id) throw new ShardRejectedError('ERR_SHARD_BAD_SUPERSEDES', 'a shard cannot supersede itself')
  }
  const authorKey = hex(content.author)
  return {
    id,
    teamId: hex(content.teamId),
    authorKey,
    author: brainIdOfKey(authorKey),
    kind,
    body: content.body,
    visibility,
    supersedes: sortedSupersedes,
    hlc: { wallMs: Number(content.hlcWallMs), counter: content.hlcCounter },
    content: wire.content,
    signature: wire.signature,
    bytes
  }
}

/** The one place that decides whether a memory may leave this node: private never does. */
export function toShardVisibility (visibility: string): ShardVisibility | undefined {
  return visibility === 'team' || visibility === 'org' || visibility === 'public' ? visibility : undefined
}
