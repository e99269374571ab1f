// Team benchmark: shard signature verification on one core, catch-up of an offline node by
// anti-entropy sync, and convergence of a swarm publishing at a steady rate.
//   npm run bench:team [-- --json] [--verify-shards 20000] [--catchup-shards 100000]
//                      [--nodes 20] [--shards 10000] [--rate 500] [--skip catchup,convergence]
import { hashes as nobleHashes, verify as nobleVerify } from '@noble/ed25519'
import { sha512 } from '@noble/hashes/sha2.js'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { domainSeparated, generateEd25519, identityFromKeyPair, SIGNATURE_CONTEXTS } from '../src/identity/index.ts'
import { createSwarm } from '../src/simulation/index.ts'
import { createShard, decodeShard, encodeCanonicalJson, type Shard } from '../src/team/index.ts'
import type { SyncStats } from '../src/team/sync/index.ts'
import { benchFlags, intList, progress, report, rssMiB, summarize, type Cell } from './lib/index.ts'

const flags = benchFlags({
  'verify-shards': { default: '20000', description: 'shards verified in the single-core verification run' },
  'catchup-shards': { default: '100000', description: 'team shards written while a node was offline (catch-up run)' },
  'catchup-memories': { default: '10000', description: 'team memories written while a node was offline (catch-up into the brain)' },
  nodes: { default: '20', description: 'nodes in the convergence run (in-process, memory transport)' },
  shards: { default: '10000', description: 'shards published in the convergence run' },
  rate: { default: '500', description: 'publish rate of the convergence run, shards per second (whole swarm)' },
  'ingest-shards': { default: '2000', description: 'team memories one node takes in, one at a time (ingest run)' },
  skip: { default: '', description: 'comma-separated runs to skip: verification, ingest, catchup, convergence' }
})
const skip = new Set((flags.values.skip ?? '').split(',').filter((s) => s !== ''))

interface VerificationResult {
  shards: number
  /** Per CPU second of the one thread (interleaved with the other, so both see the same load). */
  nodeCryptoPerSecond: number
  decodeAndVerifyPerSecond: number
  /** The same, per wall-clock second. */
  nodeCryptoPerWallSecond: number
  decodeAndVerifyPerWallSecond: number
  noblePerSecond: number
}

async function verification (count: number): Promise<VerificationResult> {
  progress(`verification: signing ${count} shards`)
  const author = await identityFromKeyPair(generateEd25519())
  const shards: Shard[] = []
  for (let i = 0; i < count; i++) {
    shards.push(createShard(author, { teamId: 'ab'.repeat(32), kind: 'dispute', body: encodeCanonicalJson({ reason: `sample reason number ${i} `.padEnd(200, 'x'), target: 'cd'.repeat(32) }), visibility: 'team', hlc: { wallMs: 1_700_000_000_000 + i, counter: 0 } }))
  }
  // full shard decode + canonical check + node:crypto verify, as the validator does, against the
  // bare verification of the same shards: interleaved in chunks, so both see the same load on a
  // shared machine, and counted in CPU time as well as wall time
  const { verifySignature } = await import('../src/identity/index.ts')
  const spent = { decodeCpu: 0, decodeWall: 0, rawCpu: 0, rawWall: 0 }
  const measure = (fn: () => void): [number, number] => {
    const cpu = process.cpuUsage()
    const wall = performance.now()
    fn()
    const used = process.cpuUsage(cpu)
    return [(used.user + used.system) / 1e6, (performance.now() - wall) / 1000]
  }
  for (let from = 0; from < count; from += 1000) {
    const chunk = shards.slice(from, from + 1000)
    const [decodeCpu, decodeWall] = measure(() => { for (const shard of chunk) decodeShard(shard.bytes) })
    const [rawCpu, rawWall] = measure(() => { for (const shard of chunk) verifySignature(author.publicKey, SIGNATURE_CONTEXTS.shard, shard.content, shard.signature) })
    spent.decodeCpu += decodeCpu
    spent.decodeWall += decodeWall
    spent.rawCpu += rawCpu
    spent.rawWall += rawWall
  }
  const decodeAndVerifyPerSecond = count / spent.decodeCpu
  const nodeCryptoPerSecond = count / spent.rawCpu
  const decodeAndVerifyPerWallSecond = count / spent.decodeWall
  const nodeCryptoPerWallSecond = count / spent.rawWall
  let start: number
  // the pure-JS verifier, side by side on a tenth of the shards
  const sample = shards.slice(0, Math.max(100, Math.floor(count / 10)))
  start = performance.now()
  nobleHashes.sha512 = sha512
  for (const shard of sample) nobleVerify(shard.signature, domainSeparated(SIGNATURE_CONTEXTS.shard, shard.content), author.publicKey)
  const noblePerSecond = sample.length / ((performance.now() - start) / 1000)
  return { shards: count, nodeCryptoPerSecond, noblePerSecond, decodeAndVerifyPerSecond, nodeCryptoPerWallSecond, decodeAndVerifyPerWallSecond }
}

interface CatchUpResult {
  kind: 'dispute' | 'memory'
  shards: number
  seconds: number
  shardBytes: number
  wireBytes: number
  ratio: number
  rounds: number
  shardsPerSecond: number
  /** CPU seconds of the whole process (both nodes, every thread) during the catch-up. */
  cpuSeconds: number
  /** Share of the catch-up the main thread's event loop was busy (both nodes share it). */
  mainThreadBusy: number
  /** CPU seconds of the main thread alone (Linux; null elsewhere): the rest is the verification workers. */
  mainThreadCpuSeconds: number | null
}

/** CPU seconds the main thread has used (Linux /proc; null where it cannot be read). */
function mainThreadCpu (): number | null {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return null
  }
}

/**
 * Two full nodes in one team; B goes offline (its team service stops and the link is cut) while A
 * writes `count` shards; B comes back and syncs (A may start a session of its own as it redials B:
 * the two nodes run one, then the other). Every shard
 * is validated (signature on worker threads, membership, schema) and stored in SQLite; memory
 * shards are also verified and indexed by B's brain.
 */
async function catchUp (count: number, kind: 'dispute' | 'memory'): Promise<CatchUpResult> {
  const swarm = await createSwarm({ nodes: 2, topology: 'full', nodeOptions: () => ({ brain: { durability: 'normal' }, team: { syncIntervalMs: 0 } }) })
  try {
    await swarm.connect()
    const [a, b] = swarm.nodes
    const { teamId } = await a.team.createTeam('catch-up')
    const { token } = await a.team.createInvite(teamId)
    await b.team.join(token)
    await waitAll([a.team, b.team], teamId, 2, 60_000)
    await b.team.stop()
    await b.mesh.libp2p.hangUp(a.mesh.peerId)
    progress(`catch-up (${kind}): A writes ${count} shards while B is away`)
    if (kind === 'dispute') {
      for (let done = 0; done < count;) {
        const batch: Uint8Array[] = []
        for (let i = 0; i < 1000 && done < count; i++, done++) {
          batch.push(createShard(a.identity, { teamId, kind: 'dispute', body: encodeCanonicalJson({ reason: `observation ${done} does not match the log `.padEnd(180, '.'), target: 'cd'.repeat(32) }), visibility: 'team', hlc: a.team.clock.now() }).bytes)
        }
        // signed here a moment ago, as publish() does: only the catch-up on B checks signatures
        a.team.acceptShards(batch, 'local', teamId, batch.map(() => true))
      }
    } else {
      for (let i = 0; i < count; i++) await a.shared.remember({ content: `observation ${i}: the reading at station ${i % 97} was ${(i * 7919) % 1000} units`, visibility: 'team' }, teamId)
    }
    const total = a.team.store.count(teamId)
    progress(`catch-up (${kind}): B returns and syncs`)
    // reconnect first and start B's team service after, so the one session we time is ours
    // (a session started on connect would otherwise run before it)
    await b.mesh.connect(a.mesh.addresses()[0])
    await b.team.start()
    // every session B takes part in counts (A may start one of its own as B reconnects; the two
    // nodes then run one and the other follows it)
    const sessions: SyncStats[] = []
    const onSync = (event: Event): void => { sessions.push((event as CustomEvent<{ stats: SyncStats }>).detail.stats) }
    b.team.events.addEventListener('sync', onSync)
    const start = performance.now()
    const cpuBefore = process.cpuUsage()
    const loopBefore = performance.eventLoopUtilization()
    const mainBefore = mainThreadCpu()
    await b.team.syncWith(a.mesh.peerId, teamId, { signal: AbortSignal.timeout(600_000) })
    while (b.team.store.count(teamId) < total) await b.team.syncWith(a.mesh.peerId, teamId, { signal: AbortSignal.timeout(600_000) })
    const seconds = (performance.now() - start) / 1000
    b.team.events.removeEventListener('sync', onSync)
    const wireBytes = sessions.reduce((sum, s) => sum + s.bytesSent + s.bytesReceived, 0)
    const shardBytes = sessions.reduce((sum, s) => sum + s.shardBytesReceived + s.shardBytesSent, 0)
    const rounds = sessions.reduce((sum, s) => sum + s.rounds, 0)
    const cpu = process.cpuUsage(cpuBefore)
    const mainThreadBusy = performance.eventLoopUtilization(loopBefore).utilization
    const mainAfter = mainThreadCpu()
    const mainThreadCpuSeconds = mainBefore != null && mainAfter != null ? mainAfter - mainBefore : null
    return { kind, shards: count, seconds, shardBytes, wireBytes, ratio: wireBytes / shardBytes, rounds, shardsPerSecond: count / seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, mainThreadBusy, mainThreadCpuSeconds }
  } finally {
    await swarm.stop()
  }
}

interface IngestResult { shards: number, perSecond: number, msPerShard: number }

/**
 * What one node can take in: team memories from another member handed over one at a time, as
 * gossip delivers them (shard check, record check and brain index, shard store).
 */
async function ingest (count: number): Promise<IngestResult> {
  const swarm = await createSwarm({ nodes: 2, topology: 'full', nodeOptions: () => ({ brain: { durability: 'normal' }, team: { syncIntervalMs: 0 } }) })
  try {
    const [a, b] = swarm.nodes
    const { teamId } = await a.team.createTeam('ingest')
    const { token } = await a.team.createInvite(teamId)
    await b.team.join(token)
    b.team.acceptShards(a.team.store.membershipShards(teamId).map((m) => m.bytes), 'bench', teamId)
    a.team.acceptShards(b.team.store.membershipShards(teamId).map((m) => m.bytes), 'bench', teamId)
    await b.team.stop()
    await swarm.nodes[1].mesh.libp2p.hangUp(a.mesh.peerId)
    progress(`ingest: A writes ${count} team memories`)
    const before = new Set(a.team.store.index(teamId).map((r) => r.id))
    for (let i = 0; i < count; i++) await a.shared.remember({ content: `measurement ${i}: sensor ${i % 53} read ${(i * 7919) % 1000} at noon`, visibility: 'team' }, teamId)
    const shards = a.team.store.index(teamId).filter((r) => !before.has(r.id)).map((r) => a.team.store.getBytes([r.id]).get(r.id) as Uint8Array)
    progress(`ingest: B takes ${shards.length} shards one at a time`)
    const start = performance.now()
    for (const bytes of shards) b.team.acceptShards([bytes], 'bench', teamId)
    const seconds = (performance.now() - start) / 1000
    if (b.team.store.count(teamId) < shards.length) throw new Error('ingest lost shards')
    return { shards: shards.length, perSecond: shards.length / seconds, msPerShard: (seconds * 1000) / shards.length }
  } finally {
    await swarm.stop()
  }
}

interface ConvergenceResult {
  nodes: number
  shards: number
  rate: number
  publishSeconds: number
  allHeldAfterLastPublishMs: number
  deliveries: number
  latencyMs: { p50: number, p90: number, p99: number, max: number }
}

/**
 * N full nodes (brain, team service, gossip, sync) in one process; the whole swarm publishes team
 * memories from random nodes at `rate`/s. Delivery latency = arrival at a node - publish time.
 */
async function convergence (nodes: number, total: number, rate: number): Promise<ConvergenceResult> {
  progress(`convergence: starting ${nodes} nodes`)
  const swarm = await createSwarm({ nodes, topology: 'random-k', k: 4, seed: 3, nodeOptions: () => ({ brain: { durability: 'normal' } }) })
  try {
    await swarm.connect()
    await swarm.waitForTopology({ timeoutMs: 60_000 })
    const [admin, ...others] = swarm.nodes
    const { teamId } = await admin.team.createTeam('bench')
    for (const node of others) {
      const { token } = await admin.team.createInvite(teamId)
      await node.team.join(token)
    }
    const membershipShards = nodes
    progress('convergence: waiting for the membership log everywhere')
    await waitAll(swarm.nodes.map((n) => n.team), teamId, membershipShards, 120_000)

    const publishedAt = new Map<string, number>()
    const latencies: number[] = []
    for (const node of swarm.nodes) {
      node.team.events.addEventListener('shard', (event) => {
        const shard = (event as CustomEvent<Shard>).detail
        const at = publishedAt.get(shard.id)
        if (at !== undefined) latencies.push(performance.now() - at)
      })
    }
    progress(`convergence: publishing ${total} shards at ${rate}/s from random nodes`)
    const start = performance.now()
    let lastPublish = start
    for (let i = 0; i < total; i++) {
      const due = start + (i * 1000) / rate
      const wait = due - performance.now()
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
      const node = swarm.nodes[Math.floor(Math.random() * nodes)]
      const t = performance.now()
      const result = await node.shared.remember({ content: `observation ${i}: reading ${Math.random().toFixed(6)} at station ${i % 97}`, visibility: 'team' }, teamId)
      if (result.shared != null) publishedAt.set(result.shared.shardId, t)
      lastPublish = performance.now()
      if ((i + 1) % 500 === 0) progress(`convergence: ${i + 1} published, ${((lastPublish - start) / 1000).toFixed(1)} s; slowest node holds ${Math.min(...swarm.nodes.map((n) => n.team.store.count(teamId)))}`)
    }
    const publishSeconds = (lastPublish - start) / 1000
    progress('convergence: waiting until every node holds every shard')
    await waitAll(swarm.nodes.map((n) => n.team), teamId, membershipShards + total, 600_000)
    const allHeld = performance.now() - lastPublish
    const summary = summarize(latencies)
    return { nodes, shards: total, rate, publishSeconds, allHeldAfterLastPublishMs: allHeld, deliveries: latencies.length, latencyMs: { p50: summary.p50, p90: summary.p90, p99: summary.p99, max: summary.max } }
  } finally {
    await swarm.stop()
  }
}

async function waitAll (teams: Array<{ store: { count: (t: string) => number }, events: EventTarget }>, teamId: string, count: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (teams.every((t) => t.store.count(teamId) >= count)) { cleanup(); resolve() } else if (performance.now() > deadline) { cleanup(); reject(new Error(`not converged within ${timeoutMs} ms: ${teams.map((t) => t.store.count(teamId)).join(',')}`)) }
    }
    const timer = setInterval(check, 100)
    const cleanup = (): void => { clearInterval(timer); for (const t of teams) t.events.removeEventListener('shard', check) }
    for (const t of teams) t.events.addEventListener('shard', check)
    check()
  })
}

const result: { verification?: VerificationResult, ingest?: IngestResult, catchUp?: CatchUpResult[], convergence?: ConvergenceResult, rssMiB?: number } = {}
const tables: Array<{ title: string, headers: string[], rows: Cell[][] }> = []
const notes: string[] = []

if (!skip.has('verification')) {
  const v = await verification(intList(flags.values['verify-shards'], [20_000])[0])
  result.verification = v
  tables.push({
    title: 'shard signature verification, one core',
    headers: ['what', 'per CPU second', 'per wall second'],
    rows: [
      ['decode + canonical check + verify (validator path)', v.decodeAndVerifyPerSecond, v.decodeAndVerifyPerWallSecond],
      ['Ed25519 verify, node:crypto', v.nodeCryptoPerSecond, v.nodeCryptoPerWallSecond],
      ['Ed25519 verify, @noble/ed25519 (pure JS)', null, v.noblePerSecond]
    ]
  })
  notes.push(`verification: ${Math.round(v.decodeAndVerifyPerSecond).toLocaleString('en-US')} shards per CPU second through the validator (target >= 9,000), ${Math.round(v.nodeCryptoPerSecond).toLocaleString('en-US')} bare node:crypto verifications, interleaved; node:crypto / noble = ${(v.nodeCryptoPerSecond / v.noblePerSecond).toFixed(1)}x, measured side by side`)
}
if (!skip.has('ingest')) {
  const r = await ingest(intList(flags.values['ingest-shards'], [2000])[0])
  result.ingest = r
  tables.push({ title: 'one node taking in team memories one at a time (as gossip delivers them)', headers: ['shards', 'per second', 'ms per shard'], rows: [[r.shards, r.perSecond, r.msPerShard]] })
  notes.push(`ingest: one node takes ${Math.round(r.perSecond).toLocaleString('en-US')} team memories/s on one thread (shard + record signature, brain index, shard store); a swarm publishing 500/s needs ${(500 / r.perSecond).toFixed(2)} of a core on every node`)
}
if (!skip.has('catchup')) {
  const runs = [
    await catchUp(intList(flags.values['catchup-shards'], [100_000])[0], 'dispute'),
    await catchUp(intList(flags.values['catchup-memories'], [10_000])[0], 'memory')
  ]
  result.catchUp = runs
  tables.push({
    title: 'catch-up: a node offline while shards were written (2 full nodes in one process, memory transport, every sync session B took part in)',
    headers: ['shards', 'kind', 'seconds', 'shards/s', 'cpu s (all threads)', 'main thread cpu s', 'main thread busy', 'shard bytes', 'wire bytes', 'wire/shard bytes', 'round trips'],
    rows: runs.map((r) => [r.shards, r.kind === 'dispute' ? 'team shards (validated + stored)' : 'team memories (+ brain verify + index)', r.seconds, r.shardsPerSecond, r.cpuSeconds, r.mainThreadCpuSeconds, r.mainThreadBusy, r.shardBytes, r.wireBytes, r.ratio, r.rounds])
  })
  notes.push(`catch-up: ${runs[0].shards.toLocaleString('en-US')} shards in ${runs[0].seconds.toFixed(2)} s (target <= 10 s), ${runs[0].cpuSeconds.toFixed(1)} CPU s (both nodes, all threads; on 2 idle cores the wall time cannot be under half that), wire bytes ${runs[0].ratio.toFixed(3)}x the shards' own (target <= 1.2x); wire bytes are sync frames both ways (yamux/noise framing not counted)`)
}
if (!skip.has('convergence')) {
  const c = await convergence(intList(flags.values.nodes, [20])[0], intList(flags.values.shards, [10_000])[0], intList(flags.values.rate, [500])[0])
  result.convergence = c
  tables.push({
    title: `convergence: ${c.nodes} full nodes in one process (brain + team + gossip + sync), random-k topology`,
    headers: ['shards', 'rate/s', 'publish s', 'deliveries', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'all held after last publish, ms'],
    rows: [[c.shards, c.rate, c.publishSeconds, c.deliveries, c.latencyMs.p50, c.latencyMs.p90, c.latencyMs.p99, c.latencyMs.max, c.allHeldAfterLastPublishMs]]
  })
  notes.push(`convergence: every node held every shard ${(c.allHeldAfterLastPublishMs / 1000).toFixed(2)} s after the last publish (target <= 2 s); all ${c.nodes} nodes share this process's one JS thread, so each delivery's ~3 signature checks and brain insert queue behind every other node's`)
}
result.rssMiB = rssMiB()
report(flags, result, tables, notes)
process.exit(0)
