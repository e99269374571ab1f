import { test } from 'node:test'
import { createHash } from 'node:crypto'
import assert from 'node:assert/strict'
import { SyncReconcile } from '../../src/pb/sync.ts'
import { seededRandom } from '../../src/simulation/index.ts'
import {
  answerMessage, decodeReconcile, encodeReconcile, fingerprintOfIds, isFinal, MemoryReconcileSet, MODE_FINGERPRINT, MODE_ID_LIST,
  openingMessage, DEFAULT_RECONCILE_OPTIONS, END_BOUND, type ReconcileMessage, type ReconcileOptions
} from '../../src/team/sync/index.ts'

interface Item { timestamp: number, id: Uint8Array }

const key = (id: Uint8Array): string => Buffer.from(id).toString('hex')

function randomId (random: () => number): Uint8Array {
  const id = new Uint8Array(32)
  for (let i = 0; i < 32; i++) id[i] = Math.floor(random() * 256)
  return id
}

/** Items with timestamps drawn from a small span, so equal timestamps (and id-prefix bounds) are common. */
function randomItems (random: () => number, n: number, span: number): Item[] {
  return Array.from({ length: n }, () => ({ timestamp: 1_700_000_000_000 + Math.floor(random() * span), id: randomId(random) }))
}

/** One side: its set and its items by id (the "store" that pushes read from). */
class Side {
  readonly set = new MemoryReconcileSet()
  readonly items = new Map<string, Item>()
  received = 0
  duplicates = 0

  constructor (items: Item[]) {
    for (const item of items) this.insert(item)
  }

  insert (item: Item): void {
    const k = key(item.id)
    if (this.items.has(k)) { this.duplicates++; return }
    this.items.set(k, item)
    this.set.add(item.timestamp, item.id)
  }
}

interface Outcome { rounds: number, messageBytes: number, transfers: number }

/**
 * Runs the protocol between two sides in memory, through the protobuf encoding and validation as
 * on the wire. Pushed ids are delivered as items before the message that follows them is read.
 */
function reconcile (a: Side, b: Side, options: ReconcileOptions = DEFAULT_RECONCILE_OPTIONS, maxTurns = 200): Outcome {
  const wire = (message: ReconcileMessage): { message: ReconcileMessage, bytes: number } => {
    const bytes = SyncReconcile.encode(encodeReconcile(message))
    return { message: decodeReconcile(SyncReconcile.decode(bytes)), bytes: bytes.byteLength }
  }
  let { message, bytes: messageBytes } = wire(openingMessage(a.set, options))
  let sender = a
  let receiver = b
  let rounds = 0
  let transfers = 0
  for (let turn = 0; turn < maxTurns; turn++) {
    const answer = answerMessage(receiver.set, message, options)
    for (const id of answer.push) {
      const item = receiver.items.get(key(id))
      assert.ok(item != null, 'a pushed id is one the pusher holds')
      sender.received++
      transfers++
      sender.insert(item)
    }
    if (receiver === b) rounds++
    const sent = wire(answer.message)
    messageBytes += sent.bytes
    if (isFinal(sent.message)) return { rounds, messageBytes, transfers }
    message = sent.message
    ;[sender, receiver] = [receiver, sender]
  }
  throw new Error(`no convergence within ${maxTurns} turns`)
}

function assertConverged (a: Side, b: Side): void {
  assert.equal(a.items.size, b.items.size)
  for (const k of a.items.keys()) assert.ok(b.items.has(k))
  assert.equal(a.set.size(), a.items.size)
  assert.equal(b.set.size(), b.items.size)
  assert.deepEqual(a.set.fingerprint(0, a.set.size()), b.set.fingerprint(0, b.set.size()))
}

test('set: sorted order, lowerBound and fingerprints match a naive model after out-of-order and duplicate inserts', () => {
  const random = seededRandom(7)
  const set = new MemoryReconcileSet()
  const model: Item[] = []
  const seen = new Set<string>()
  for (let round = 0; round < 20; round++) {
    const batch = randomItems(random, 1 + Math.floor(random() * 300), 5000)
    for (const item of batch) {
      set.add(item.timestamp, item.id)
      if (random() < 0.1) set.add(item.timestamp, item.id)
      if (!seen.has(key(item.id))) { seen.add(key(item.id)); model.push(item) }
    }
    if (round % 4 === 0 && model.length > 0) {
      const again = model[Math.floor(random() * model.length)]
      set.add(again.timestamp, again.id)
    }
    model.sort((x, y) => x.timestamp - y.timestamp || Buffer.compare(x.id, y.id))
    assert.equal(set.size(), model.length)
    for (let check = 0; check < 20; check++) {
      const i = Math.floor(random() * model.length)
      assert.equal(set.timestampAt(i), model[i].timestamp)
      assert.deepEqual(set.idAt(i), model[i].id)
      const begin = Math.floor(random() * model.length)
      const end = begin + Math.floor(random() * (model.length - begin + 1))
      assert.deepEqual(set.fingerprint(begin, end), fingerprintOfIds(model.slice(begin, end).map((m) => m.id)))
      assert.equal(set.lowerBound({ timestamp: model[i].timestamp, idPrefix: model[i].id }), i)
      assert.equal(set.lowerBound({ timestamp: model[i].timestamp, idPrefix: new Uint8Array(0) }), model.findIndex((m) => m.timestamp === model[i].timestamp))
    }
    assert.equal(set.lowerBound(END_BOUND), model.length)
  }
  const victim = model[Math.floor(model.length / 2)]
  assert.equal(set.remove(victim.timestamp, victim.id), true)
  assert.equal(set.has(victim.timestamp, victim.id), false)
  assert.equal(set.remove(victim.timestamp, victim.id), false)
  const rest = model.filter((m) => m !== victim)
  assert.deepEqual(set.fingerprint(0, set.size()), fingerprintOfIds(rest.map((m) => m.id)))
  assert.throws(() => { set.add(-1, victim.id) }, /timestamp/)
  assert.throws(() => { set.add(2 ** 53, victim.id) }, /timestamp/)
  assert.throws(() => { set.add(1, new Uint8Array(31)) }, /32 bytes/)
})

test('fingerprint test vector (docs/sync.md): SHA-256(sum of ids as little-endian 256-bit integers || varint(count)), first 16 bytes', () => {
  const ids = ['a', 'b', 'c'].map((s) => new Uint8Array(createHash('sha256').update(s).digest()))
  assert.equal(Buffer.from(fingerprintOfIds([])).toString('hex'), '7f9c9e31ac8256ca2f258583df262dbc')
  assert.equal(Buffer.from(fingerprintOfIds(ids)).toString('hex'), '112619621eedbb2854905168426d62b0')
  const set = new MemoryReconcileSet()
  set.add(6, ids[2])
  set.add(5, ids[1])
  set.add(5, ids[0])
  assert.equal(Buffer.from(set.fingerprint(0, 3)).toString('hex'), '112619621eedbb2854905168426d62b0')
  // the same sum computed with BigInt
  let sum = 0n
  for (const id of ids) sum += BigInt('0x' + Buffer.from(id).reverse().toString('hex'))
  const le = Buffer.from((sum % (1n << 256n)).toString(16).padStart(64, '0'), 'hex').reverse()
  assert.equal(createHash('sha256').update(le).update(Uint8Array.from([3])).digest('hex').slice(0, 32), '112619621eedbb2854905168426d62b0')
})

test('identical sets settle in one round trip with one small message each way', () => {
  const items = randomItems(seededRandom(1), 5000, 1_000_000)
  const a = new Side(items)
  const b = new Side(items)
  const outcome = reconcile(a, b)
  assert.equal(outcome.rounds, 1)
  assert.equal(outcome.transfers, 0)
  assert.ok(outcome.messageBytes < 100, `${outcome.messageBytes} bytes`)
})

test('random sets with small and large differences both ways converge, moving each missing item exactly once', () => {
  for (let seed = 1; seed <= 24; seed++) {
    const random = seededRandom(seed * 7919)
    const span = [50, 5000, 10_000_000][seed % 3]
    const common = randomItems(random, Math.floor(random() * 4000), span)
    const onlyA = randomItems(random, seed % 4 === 0 ? Math.floor(random() * 2000) : Math.floor(random() * 40), span)
    const onlyB = randomItems(random, seed % 5 === 0 ? Math.floor(random() * 2000) : Math.floor(random() * 40), span)
    const a = new Side([...common, ...onlyA])
    const b = new Side([...common, ...onlyB])
    const outcome = reconcile(a, b)
    assertConverged(a, b)
    assert.equal(a.received, onlyB.length, `seed ${seed}: A received exactly what it lacked`)
    assert.equal(b.received, onlyA.length, `seed ${seed}: B received exactly what it lacked`)
    assert.equal(a.duplicates + b.duplicates, 0, `seed ${seed}: nothing pushed twice`)
    assert.ok(outcome.rounds <= 8, `seed ${seed}: ${outcome.rounds} rounds`)
  }
})

test('empty against full, both ways: the full side pushes everything, sending no id lists', () => {
  const items = randomItems(seededRandom(3), 20_000, 100_000_000)
  for (const emptyFirst of [true, false]) {
    const full = new Side(items)
    const empty = new Side([])
    const outcome = emptyFirst ? reconcile(empty, full) : reconcile(full, empty)
    assertConverged(full, empty)
    assert.equal(empty.received, items.length)
    assert.equal(full.received, 0)
    assert.ok(outcome.rounds <= 2, `${outcome.rounds} rounds`)
    assert.ok(outcome.messageBytes < 2000, `${outcome.messageBytes} bytes of reconciliation messages`)
  }
})

test('one difference in 100k items: a few round trips and a few KB, either side missing it', () => {
  const random = seededRandom(11)
  const items = randomItems(random, 100_000, 1_000_000_000)
  const extra = randomItems(random, 1, 1_000_000_000)[0]
  for (const extraOnA of [true, false]) {
    const a = new Side(extraOnA ? [...items, extra] : items)
    const b = new Side(extraOnA ? items : [...items, extra])
    const outcome = reconcile(a, b)
    assertConverged(a, b)
    assert.equal(a.received + b.received, 1)
    assert.ok(outcome.rounds <= 5, `${outcome.rounds} rounds`)
    assert.ok(outcome.messageBytes < 6000, `${outcome.messageBytes} bytes`)
  }
})

test('a node that missed most of a large set gets it pushed, and ids of the larger side never travel', () => {
  const random = seededRandom(5)
  const old = randomItems(random, 2000, 1_000_000)
  const later = randomItems(random, 30_000, 1_000_000).map((item) => ({ ...item, timestamp: item.timestamp + 2_000_000 }))
  const behind = new Side(old)
  const ahead = new Side([...old, ...later])
  const outcome = reconcile(behind, ahead)
  assertConverged(behind, ahead)
  assert.equal(behind.received, later.length)
  // listing the 30k ids would cost 960 KB; fingerprints and the small side's ids cost far less
  assert.ok(outcome.messageBytes < 40_000, `${outcome.messageBytes} bytes of reconciliation messages`)
})

test('a tight message budget still converges (the rest of the space is handed back as one range)', () => {
  const random = seededRandom(17)
  const common = randomItems(random, 3000, 100_000)
  const a = new Side([...common, ...randomItems(random, 3000, 100_000)])
  const b = new Side([...common, ...randomItems(random, 3000, 100_000)])
  const options: ReconcileOptions = { ...DEFAULT_RECONCILE_OPTIONS, maxMessageBytes: 4096 }
  reconcile(a, b, options, 2000)
  assertConverged(a, b)
  assert.equal(a.duplicates + b.duplicates, 0)
  // each answer stays near the budget (one split or id list past it, plus the handed-back range)
  const x = new Side(randomItems(seededRandom(2), 5000, 100_000))
  const y = new Side(randomItems(seededRandom(3), 5000, 100_000))
  let message = openingMessage(x.set, options)
  for (let turn = 0; turn < 6; turn++) {
    const answer = answerMessage(turn % 2 === 0 ? y.set : x.set, message, options)
    const size = SyncReconcile.encode(encodeReconcile(answer.message)).byteLength
    assert.ok(size <= options.maxMessageBytes + 2 * 1024 + 64, `message of ${size} bytes`)
    message = answer.message
  }
})

test('reconciliation messages from the network are validated', () => {
  const set = new MemoryReconcileSet()
  const items = randomItems(seededRandom(9), 100, 1000)
  for (const item of items) set.add(item.timestamp, item.id)
  const good = encodeReconcile(answerMessage(set, { ranges: [{ upper: END_BOUND, mode: MODE_FINGERPRINT, fingerprint: new Uint8Array(16), count: 5 }], want: [] }).message)
  assert.ok(decodeReconcile(good).ranges.length > 1)
  const range = good.ranges[0]
  const bad = [
    { ranges: [{ ...range, fingerprint: new Uint8Array(15) }], want: new Uint8Array(0) },
    { ranges: [{ ...range, mode: 7 }], want: new Uint8Array(0) },
    { ranges: [{ ...range, mode: MODE_ID_LIST, ids: new Uint8Array(33) }], want: new Uint8Array(0) },
    { ranges: [{ ...range, mode: MODE_ID_LIST, ids: new Uint8Array(32 * 1025) }], want: new Uint8Array(0) },
    { ranges: [good.ranges[1], good.ranges[0]], want: new Uint8Array(0) },
    { ranges: [{ ...range, infinite: true }, good.ranges[1]], want: new Uint8Array(0) },
    { ranges: [{ ...range, idPrefix: new Uint8Array(33) }], want: new Uint8Array(0) },
    { ranges: [{ ...range, timestamp: 0, idPrefix: new Uint8Array(0) }], want: new Uint8Array(0) },
    { ranges: [], want: new Uint8Array(31) }
  ]
  for (const message of bad) {
    assert.throws(() => decodeReconcile(SyncReconcile.decode(SyncReconcile.encode(message))), (err: unknown) => (err as { code?: string }).code === 'ERR_INVALID_MESSAGE')
  }
  // a timestamp of 2^60 does not even decode (the session answers ERR_INVALID_MESSAGE)
  const inner = [0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]
  assert.throws(() => SyncReconcile.decode(Uint8Array.from([0x0a, inner.length, ...inner])))
})
