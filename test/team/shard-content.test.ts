import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ShardContent } from '../../src/pb/team.ts'
import { seededRandom } from '../../src/simulation/index.ts'
import { ShardRejectedError } from '../../src/team/errors.ts'
import { readCanonicalContent, type ShardContentFields } from '../../src/team/shard-content.ts'

/** The reference: protons decodes, and the bytes are canonical iff re-encoding gives them back. */
function reference (bytes: Uint8Array): ShardContent | undefined {
  try {
    const content = ShardContent.decode(bytes)
    return Buffer.compare(ShardContent.encode(content), bytes) === 0 ? content : undefined
  } catch {
    return undefined
  }
}

function fast (bytes: Uint8Array): ShardContentFields | undefined {
  try {
    return readCanonicalContent(bytes)
  } catch (err) {
    assert.ok(err instanceof ShardRejectedError, `a typed rejection, not ${String(err)}`)
    assert.ok(err.code === 'ERR_SHARD_NON_CANONICAL' || err.code === 'ERR_SHARD_MALFORMED', err.code)
    return undefined
  }
}

const plain = (c: ShardContentFields | ShardContent): unknown => ({
  version: c.version,
  teamId: Buffer.from(c.teamId).toString('hex'),
  author: Buffer.from(c.author).toString('hex'),
  kind: c.kind,
  body: Buffer.from(c.body).toString('hex'),
  visibility: c.visibility,
  supersedes: c.supersedes.map((s) => Buffer.from(s).toString('hex')),
  hlcWallMs: c.hlcWallMs,
  hlcCounter: c.hlcCounter
})

test('the one-pass canonical reader accepts exactly what decode + re-encode accepts, with the same fields', () => {
  const random = seededRandom(7)
  const int = (n: number): number => Math.floor(random() * n)
  const bytesOf = (n: number): Uint8Array<ArrayBuffer> => Uint8Array.from({ length: n }, () => int(256))
  // values at the edges of each varint width, zeros (defaults) included
  const u32 = (): number => [0, 1, 127, 128, 16_383, 16_384, 2 ** 28 - 1, 2 ** 28, 2 ** 32 - 1, int(2 ** 32)][int(10)]
  const u64 = (): bigint => [0n, 1n, 127n, 128n, 2n ** 35n, 1_700_000_000_000n + BigInt(int(1e9)), 2n ** 63n, 2n ** 64n - 1n][int(8)]
  const valid = (): Uint8Array => ShardContent.encode({
    version: u32(),
    teamId: bytesOf([0, 32, 5][int(3)]),
    author: bytesOf([0, 32][int(2)]),
    kind: u32(),
    body: bytesOf([0, 1, 200, 300][int(4)]),
    visibility: u32(),
    supersedes: Array.from({ length: int(3) }, () => bytesOf([0, 32][int(2)])),
    hlcWallMs: u64(),
    hlcCounter: u32()
  })
  const mutate = (input: Uint8Array): Uint8Array => {
    const b = Array.from(input)
    switch (int(8)) {
      case 0: if (b.length > 0) b[int(b.length)] = int(256); break
      case 1: b.splice(int(b.length + 1), 0, int(256)); break
      case 2: b.splice(int(b.length), 1); break
      case 3: b.length = int(b.length + 1); break
      case 4: b.push(...[[8, 1], [80, 5], [0x7a, 1, 0], [18, 0], [72, 0x80, 0x00], [8, 0x81, 0x80, 0x80, 0x80, 0x10]][int(6)]); break
      case 5: { const from = int(b.length); b.splice(int(b.length), 0, ...b.slice(from, from + 1 + int(6))); break }
      case 6: if (b.length > 0) b[int(b.length)] |= 0x80; break
      default: if (b.length > 1) { const i = int(b.length - 1); [b[i], b[i + 1]] = [b[i + 1], b[i]] }
    }
    return Uint8Array.from(b)
  }
  let accepted = 0
  let rejected = 0
  for (let i = 0; i < 30_000; i++) {
    let bytes = valid()
    for (let m = int(3); m > 0; m--) bytes = mutate(bytes)
    const expected = reference(bytes)
    const actual = fast(bytes)
    assert.equal(actual != null, expected != null, `${Buffer.from(bytes).toString('hex')}: reference ${expected != null ? 'accepts' : 'rejects'}`)
    if (expected != null && actual != null) {
      assert.deepEqual(plain(actual), plain(expected))
      accepted++
    } else {
      rejected++
    }
  }
  // both kinds of input were tried in numbers
  assert.ok(accepted > 3000 && rejected > 3000, `${accepted} accepted, ${rejected} rejected`)
})
