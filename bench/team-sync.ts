/**
 * Team sync benchmark: catch-up of a node that was offline while N shards were written, then one
 * difference in the same large set, then identical sets. Two in-process nodes on the memory
 * transport (noise + yamux, as in production); bytes are counted at the message-channel level
 * (every frame and its length prefix, both ways), rounds are the round trips the initiator waited.
 *
 *   node bench/team-sync.ts [--shards 100000] [--size 300] [--base 1000] [--verify no|yes]
 *                           [--seed 42] [--json]
 *
 * Shards are seeded random bytes (8-byte timestamp, payload, 64-byte signature); the receiving
 * store computes each id (SHA-256 of the unsigned bytes) and, with --verify yes, checks the Ed25519
 * signature with node:crypto as the team validator does.
 */
import { createHash } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import type { PeerId } from '@libp2p/interface'
import { generateEd25519, identityFromKeyPair, SIGNATURE_CONTEXTS, verifySignature, type Identity } from '../src/identity/index.ts'
import { createSwarm } from '../src/simulation/index.ts'
import { createSyncService, MemoryReconcileSet, type AcceptResult, type SyncService, type SyncStats, type SyncTeam } from '../src/team/sync/index.ts'
import { silentLogger } from '../src/util/logger.ts'
import { benchFlags, intList, progress, report, rssMiB, seededRandom, type Cell } from './lib/index.ts'

const TEAM = 'bench-team'
const SIGNATURE = 64
const T0 = 1_700_000_000_000

export interface SyncBenchOptions {
  shards: number
  /** Mean shard size in bytes (sizes vary ±20 %). */
  size: number
  /** Shards both nodes held before one went offline. */
  base: number
  verify: boolean
  seed: number
}

interface Scenario {
  name: string
  seconds: number
  shardsMoved: number
  shardBytes: number
  bytesUp: number
  bytesDown: number
  rounds: number
  frames: number
}

export interface SyncBenchResult {
  options: SyncBenchOptions
  catchUp: Scenario & { ratio: number, shardsPerSecond: number }
  oneDifference: Scenario
  identical: Scenario
  rssMiB: number
}

/** A shard store like the team's: ids by SHA-256 of the unsigned bytes, optional signature check. */
class BenchStore {
  readonly set = new MemoryReconcileSet()
  readonly shards = new Map<string, Uint8Array>()
  private readonly publicKey: Uint8Array
  private readonly verify: boolean

  constructor (publicKey: Uint8Array, verify: boolean) {
    this.publicKey = publicKey
    this.verify = verify
  }

  insert (bytes: Uint8Array): boolean {
    const unsigned = bytes.subarray(0, bytes.length - SIGNATURE)
    const id = createHash('sha256').update(unsigned).digest()
    const key = id.toString('latin1')
    if (this.shards.has(key)) return false
    this.shards.set(key, bytes)
    this.set.add(Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0)), id)
    return true
  }

  readonly getShards = (ids: Uint8Array[]): Array<Uint8Array | undefined> => ids.map((id) => this.shards.get(Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')))

  readonly acceptShards = async (batch: Uint8Array[]): Promise<AcceptResult> => {
    let accepted = 0
    let rejected = 0
    for (const bytes of batch) {
      if (bytes.length <= 8 + SIGNATURE) { rejected++; continue }
      const unsigned = bytes.subarray(0, bytes.length - SIGNATURE)
      if (this.verify && !verifySignature(this.publicKey, SIGNATURE_CONTEXTS.shard, unsigned, bytes.subarray(bytes.length - SIGNATURE))) { rejected++; continue }
      if (this.insert(Uint8Array.from(bytes))) accepted++
    }
    return { accepted, rejected }
  }

  team (members: Set<string>): SyncTeam {
    return { set: this.set, getShards: this.getShards, acceptShards: this.acceptShards, mayServe: (peer: PeerId) => members.has(peer.toString()) }
  }
}

function makeShards (random: () => number, author: Identity, count: number, size: number, from: number, sign: boolean): Uint8Array[] {
  const shards: Uint8Array[] = []
  for (let i = 0; i < count; i++) {
    const length = Math.max(8 + SIGNATURE + 8, Math.round(size * (0.8 + 0.4 * random())))
    const bytes = new Uint8Array(length)
    new DataView(bytes.buffer).setBigUint64(0, BigInt(T0 + from + Math.floor(random() * 3_600_000)))
    for (let j = 8; j < length; j++) bytes[j] = (random() * 256) | 0
    if (sign) bytes.set(author.sign(SIGNATURE_CONTEXTS.shard, bytes.subarray(0, length - SIGNATURE)), length - SIGNATURE)
    shards.push(bytes)
  }
  return shards
}

function scenario (name: string, stats: SyncStats, seconds: number): Scenario {
  return {
    name,
    seconds,
    shardsMoved: stats.shardsReceived + stats.shardsSent,
    shardBytes: stats.shardBytesReceived + stats.shardBytesSent,
    bytesUp: stats.bytesSent,
    bytesDown: stats.bytesReceived,
    rounds: stats.rounds,
    frames: stats.framesSent + stats.framesReceived
  }
}

export async function runSyncBench (options: SyncBenchOptions): Promise<SyncBenchResult> {
  const random = seededRandom(options.seed)
  const author = await identityFromKeyPair(generateEd25519())
  progress(`making ${options.base} + ${options.shards} shards of ~${options.size} bytes${options.verify ? ' (signed)' : ''}`)
  const base = makeShards(random, author, options.base, options.size, 0, options.verify)
  const written = makeShards(random, author, options.shards, options.size, 10_000_000, options.verify)
  const swarm = await createSwarm({ nodes: 2, topology: 'full' })
  // the benchmark runs bare sync services over its own stores: set the nodes' team services aside
  for (const node of swarm.nodes) await node.team.stop()
  const services: SyncService[] = []
  try {
    const [online, offline] = swarm.nodes
    const members = new Set(swarm.nodes.map((n) => n.mesh.peerId.toString()))
    const a = new BenchStore(author.publicKey, options.verify)
    const b = new BenchStore(author.publicKey, options.verify)
    for (const shard of base) { a.insert(shard); b.insert(shard) }
    for (const shard of written) a.insert(shard)
    a.set.size()
    b.set.size()
    for (const [node, store] of [[online, a], [offline, b]] as const) {
      const service = createSyncService({ libp2p: node.mesh.libp2p, logger: silentLogger(), intervalMs: 0, syncOnConnect: false, teams: [[TEAM, store.team(members)]] })
      await service.start()
      services.push(service)
    }
    await offline.mesh.connect(online.mesh.addresses()[0])
    const sync = async (): Promise<{ stats: SyncStats, seconds: number }> => {
      const start = process.hrtime.bigint()
      const stats = await services[1].syncWith(online.mesh.peerId, TEAM, { signal: AbortSignal.timeout(600_000) })
      return { stats, seconds: Number(process.hrtime.bigint() - start) / 1e9 }
    }

    progress('catch-up')
    const caught = await sync()
    if (b.shards.size !== a.shards.size) throw new Error(`catch-up incomplete: ${b.shards.size} of ${a.shards.size}`)
    const catchUp = scenario(`catch-up of ${options.shards.toLocaleString('en-US')} shards`, caught.stats, caught.seconds)

    progress('one difference')
    a.insert(makeShards(random, author, 1, options.size, 5_000_000, options.verify)[0])
    const one = await sync()
    if (b.shards.size !== a.shards.size) throw new Error('the one difference did not arrive')

    progress('identical')
    const same = await sync()
    return {
      options,
      catchUp: { ...catchUp, ratio: (catchUp.bytesUp + catchUp.bytesDown) / catchUp.shardBytes, shardsPerSecond: catchUp.shardsMoved / catchUp.seconds },
      oneDifference: scenario(`1 difference in ${a.shards.size.toLocaleString('en-US')}`, one.stats, one.seconds),
      identical: scenario(`identical ${a.shards.size.toLocaleString('en-US')}`, same.stats, same.seconds),
      rssMiB: rssMiB()
    }
  } finally {
    for (const service of services) await service.stop()
    await swarm.stop()
  }
}

export function syncTables (result: SyncBenchResult): Array<{ title: string, headers: string[], rows: Cell[][] }> {
  const row = (s: Scenario): Cell[] => [s.name, s.seconds, s.shardsMoved, s.shardBytes, s.bytesUp, s.bytesDown, s.bytesUp + s.bytesDown, s.shardBytes > 0 ? (s.bytesUp + s.bytesDown) / s.shardBytes : null, s.rounds, s.frames]
  return [{
    title: `team sync (memory transport, 2 nodes, shards ~${result.options.size} B, signature check ${result.options.verify ? 'on' : 'off'})`,
    headers: ['scenario', 'seconds', 'shards moved', 'shard bytes', 'bytes up', 'bytes down', 'bytes total', 'total/shard bytes', 'round trips', 'frames'],
    rows: [row(result.catchUp), row(result.oneDifference), row(result.identical)]
  }]
}

async function main (): Promise<void> {
  const flags = benchFlags({
    shards: { default: '100000', description: 'shards written while the node was offline' },
    size: { default: '300', description: 'mean shard size in bytes' },
    base: { default: '1000', description: 'shards both nodes held before' },
    verify: { default: 'no', description: 'yes: sign shards and verify each signature on accept' },
    seed: { default: '42', description: 'seed of the shard bytes' }
  })
  const result = await runSyncBench({
    shards: intList(flags.values.shards, [100_000])[0],
    size: intList(flags.values.size, [300])[0],
    base: Number(flags.values.base ?? 1000),
    verify: flags.values.verify === 'yes',
    seed: Number(flags.values.seed ?? 42)
  })
  const c = result.catchUp
  report(flags, result, syncTables(result), [
    `catch-up: ${c.seconds.toFixed(2)} s (target <= 10 s), ${Math.round(c.shardsPerSecond).toLocaleString('en-US')} shards/s, wire bytes ${c.ratio.toFixed(3)}x the shards' bytes (target <= 1.2x)`,
    `rss ${result.rssMiB.toFixed(0)} MiB; bytes are frames + length prefixes on the sync stream, both ways (not counted: yamux headers and noise tags, an estimated 0.1-0.2 % more)`
  ])
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  })
}
