import { ShardRejectedError } from './errors.ts'

/*
 * Reads a shard's content bytes and checks, in the same pass, that they are the one canonical
 * encoding of what they carry: exactly the bytes ShardContent.encode would write (fields in number
 * order, each singular field at most once, proto3 defaults omitted, minimal varints, no unknown
 * fields). It replaces "decode, re-encode, compare", which cost about three times as much, on the
 * path of every shard received (test/team/shard-content.test.ts checks both agree).
 */

// field number -> wire tag of proto/team.proto's ShardContent
const TAG_VERSION = 8
const TAG_TEAM_ID = 18
const TAG_AUTHOR = 26
const TAG_KIND = 32
const TAG_BODY = 42
const TAG_VISIBILITY = 48
const TAG_SUPERSEDES = 58
const TAG_HLC_WALL_MS = 64
const TAG_HLC_COUNTER = 72

const EMPTY = new Uint8Array(0)

/** The fields of proto/team.proto's ShardContent, as read (byte fields are views into the input). */
export interface ShardContentFields {
  version: number
  teamId: Uint8Array
  author: Uint8Array
  kind: number
  body: Uint8Array
  visibility: number
  supersedes: Uint8Array[]
  hlcWallMs: bigint
  hlcCounter: number
}

function nonCanonical (what: string): ShardRejectedError {
  return new ShardRejectedError('ERR_SHARD_NON_CANONICAL', `shard content is not in canonical encoding: ${what}`)
}

function truncated (): ShardRejectedError {
  return new ShardRejectedError('ERR_SHARD_MALFORMED', 'shard does not decode: the content ends inside a field')
}

export function readCanonicalContent (bytes: Uint8Array): ShardContentFields {
  const content: ShardContentFields = {
    version: 0,
    teamId: EMPTY,
    author: EMPTY,
    kind: 0,
    body: EMPTY,
    visibility: 0,
    supersedes: [],
    hlcWallMs: 0n,
    hlcCounter: 0
  }
  const end = bytes.byteLength
  let pos = 0

  /** A varint of at most `maxBytes` bytes in minimal form (a last byte of 0 only for the value 0). */
  const varint = (maxBytes: number): number | bigint => {
    let low = 0
    let shift = 0
    for (let i = 0; i < maxBytes; i++) {
      if (pos >= end) throw truncated()
      const byte = bytes[pos++]
      if (i > 0 && byte === 0) throw nonCanonical('a varint is longer than it needs to be')
      if (i < 4) {
        low |= (byte & 0x7f) << shift
        shift += 7
        if ((byte & 0x80) === 0) return low >>> 0
      } else {
        // past 28 bits: finish in BigInt (only uint64 fields get here with large values)
        let value = BigInt(low >>> 0) | (BigInt(byte & 0x7f) << 28n)
        let bigShift = 35n
        if ((byte & 0x80) === 0) return value
        for (let j = i + 1; j < maxBytes; j++) {
          if (pos >= end) throw truncated()
          const next = bytes[pos++]
          if (next === 0) throw nonCanonical('a varint is longer than it needs to be')
          value |= BigInt(next & 0x7f) << bigShift
          bigShift += 7n
          if ((next & 0x80) === 0) return value
        }
        break
      }
    }
    throw nonCanonical('a varint is too long for its field')
  }

  const uint32 = (): number => {
    const value = varint(5)
    if (typeof value === 'bigint') {
      if (value > 0xffffffffn) throw nonCanonical('a 32-bit field holds a larger value')
      return Number(value)
    }
    return value
  }

  const lengthDelimited = (): Uint8Array => {
    const length = uint32()
    if (length > end - pos) throw truncated()
    const value = bytes.subarray(pos, pos + length)
    pos += length
    return value
  }

  let lastTag = 0
  while (pos < end) {
    const tag = bytes[pos++]
    // every tag of ShardContent fits one byte; supersedes (repeated) is the only one that may recur
    if (tag < lastTag || (tag === lastTag && tag !== TAG_SUPERSEDES)) throw nonCanonical('fields out of order or repeated')
    lastTag = tag
    switch (tag) {
      case TAG_VERSION: content.version = uint32(); break
      case TAG_TEAM_ID: content.teamId = lengthDelimited(); break
      case TAG_AUTHOR: content.author = lengthDelimited(); break
      case TAG_KIND: content.kind = uint32(); break
      case TAG_BODY: content.body = lengthDelimited(); break
      case TAG_VISIBILITY: content.visibility = uint32(); break
      case TAG_SUPERSEDES: content.supersedes.push(lengthDelimited()); break
      case TAG_HLC_WALL_MS: {
        const value = varint(10)
        const wide = typeof value === 'bigint' ? value : BigInt(value)
        if (wide > 0xffffffffffffffffn) throw nonCanonical('a 64-bit field holds a larger value')
        content.hlcWallMs = wide
        break
      }
      case TAG_HLC_COUNTER: content.hlcCounter = uint32(); break
      default: throw nonCanonical(`unknown field or wire type (tag ${tag})`)
    }
    // proto3 leaves defaults out: a singular field present with its default value is not canonical
    if ((tag === TAG_VERSION && content.version === 0) || (tag === TAG_KIND && content.kind === 0) ||
      (tag === TAG_VISIBILITY && content.visibility === 0) || (tag === TAG_HLC_COUNTER && content.hlcCounter === 0) ||
      (tag === TAG_HLC_WALL_MS && content.hlcWallMs === 0n) || (tag === TAG_TEAM_ID && content.teamId.byteLength === 0) ||
      (tag === TAG_AUTHOR && content.author.byteLength === 0) || (tag === TAG_BODY && content.body.byteLength === 0)) {
      throw nonCanonical('a field holds its default value')
    }
  }
  return content
}
