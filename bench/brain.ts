/**
 * Brain benchmark: batched and single ingest, recall latency, path latency and RSS at each corpus
 * size (default 10k and 100k memories and as many relations), on a seeded synthetic corpus.
 *
 *   node bench/brain.ts [--sizes 10000,100000] [--queries 2000] [--single 2000] [--paths 500]
 *                       [--durability full|normal] [--signing-threads N] [--compare-signing 20000] [--json]
 *
 * --compare-signing N: at each size, also ingests N memories in batches of 1,000 into two fresh
 * brains side by side, one with the default signing workers and one signing on the main thread,
 * alternating batch by batch (and which goes first), so both see the same load.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createBrain, defaultSigningThreads, type RelateInput, type RememberInput } from '../src/brain/index.ts'
// not part of the brain's API: the bench opens a bare database exactly the way the brain does
import { openDatabase } from '../src/brain/db.ts'
import { generateEd25519, identityFromKeyPair } from '../src/identity/index.ts'
import { benchFlags, intList, pick, progress, report, rssMiB, seededRandom, summarize, timeMs, zipfSampler, type Cell } from './lib/index.ts'

const flags = benchFlags({
  sizes: { default: '10000,100000', description: 'corpus sizes (memories, and relations) to measure' },
  queries: { default: '2000', description: 'recall queries per size' },
  single: { default: '2000', description: 'single (one transaction each) ingests per size' },
  paths: { default: '500', description: 'path queries per size' },
  durability: { default: 'full', description: 'full (fsync each commit) or normal' },
  seed: { default: '42', description: 'corpus seed' },
  'signing-threads': { description: 'workers that sign bulk writes (default: the brain\'s default, cores - 1, at most 3; 0: main thread)' },
  'compare-signing': { default: '0', description: 'memories per A/B batched ingest, signing workers vs main thread (0: no A/B)' },
  keep: { description: 'keep the databases in this directory instead of deleting them' }
})
const sizes = intList(flags.values.sizes, [10_000, 100_000])
const queryCount = Number(flags.values.queries)
const singleCount = Number(flags.values.single)
const pathCount = Number(flags.values.paths)
const durability = flags.values.durability === 'normal' ? 'normal' : 'full'
const seed = Number(flags.values.seed)
const signingThreads = flags.values['signing-threads'] === undefined ? defaultSigningThreads() : Number(flags.values['signing-threads'])
const compareCount = Number(flags.values['compare-signing'])

// --- a seeded synthetic corpus: a Zipf-distributed vocabulary of made-up words, stop words between
const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'tra', 'vel', 'or', 'sun', 'dex', 'pa', 'ri', 'shu', 'to', 'ben', 'gal', 'zor', 'in', 'qua', 'fe', 'mo', 'ster', 'ly', 'an', 'cor']
const STOP = ['the', 'a', 'of', 'to', 'and', 'in', 'is', 'for', 'on', 'with', 'that', 'we', 'it', 'was', 'at', 'by', 'from', 'our', 'this']
const KINDS = ['fact', 'preference', 'event', 'decision', 'note', 'rule']
const TOPICS = ['billing', 'infra', 'hiring', 'roadmap', 'support', 'research', 'security', 'design']

function vocabulary (random: () => number, size: number): string[] {
  const words = new Set<string>()
  while (words.size < size) {
    const n = 2 + Math.floor(random() * 3)
    let w = ''
    for (let i = 0; i < n; i++) w += pick(random, SYLLABLES)
    words.add(w)
  }
  return [...words]
}

function corpus (size: number): { memories: RememberInput[], contentWords: string[][] } {
  const random = seededRandom(seed)
  const vocab = vocabulary(random, 50_000)
  const zipf = zipfSampler(random, vocab.length, 1.0)
  const memories: RememberInput[] = []
  const contentWords: string[][] = []
  const start = Date.parse('2023-01-01')
  for (let i = 0; i < size; i++) {
    const n = 8 + Math.floor(random() * 16)
    const words: string[] = []
    const sentence: string[] = []
    for (let j = 0; j < n; j++) {
      const w = vocab[zipf()]
      words.push(w)
      sentence.push(w)
      if (random() < 0.6) sentence.push(pick(random, STOP))
    }
    contentWords.push(words)
    memories.push({
      content: sentence.join(' ') + '.',
      kind: pick(random, KINDS),
      topic: pick(random, TOPICS),
      key: random() < 0.2 ? `k${i % Math.max(1, Math.floor(size / 10))}` : undefined,
      confidence: Math.round((0.5 + random() * 0.5) * 100) / 100,
      validFrom: new Date(start + Math.floor(random() * 700) * 86_400_000).toISOString()
    })
  }
  return { memories, contentWords }
}

const ENTITY_TYPES = ['person', 'project', 'technology', 'organization'] as const

function relationFor (a: number, b: number): RelateInput {
  const ta = ENTITY_TYPES[a % 4]
  const tb = ENTITY_TYPES[b % 4]
  let predicate = 'related_to'
  if (ta === 'person' && tb === 'person') predicate = 'knows'
  else if (ta === 'person' && tb === 'project') predicate = 'works_on'
  else if (ta === 'project' && tb === 'technology') predicate = 'depends_on'
  else if (ta === 'person' && tb === 'organization') predicate = 'member_of'
  return { subject: { name: `entity-${a}`, type: ta }, predicate, object: { name: `entity-${b}`, type: tb }, validFrom: '2023-01-01' }
}

interface SizeResult {
  size: number
  batchedIngestPerSec: number
  singleIngestPerSec: number
  /**
   * One-row commits/s of a bare SQLite table with the brain's pragmas, measured right after the
   * single ingest: the ceiling the disk (fsync, with durability full) puts on single ingest.
   */
  bareCommitsPerSec: number
  relationIngestPerSec: number
  recallMs: ReturnType<typeof summarize>
  /** CPU time of this process per recall: less sensitive than wall time to other load on the machine. */
  recallCpuMs: ReturnType<typeof summarize>
  /** brain.get of a random memory after each recall: how much of the tail is the machine, not recall. */
  floorMs: ReturnType<typeof summarize>
  recallHitRate: number
  /** The same kind of queries with expand (feedback query), a quarter as many. */
  recallExpandMs: ReturnType<typeof summarize>
  pathMs: ReturnType<typeof summarize>
  pathFoundMs: ReturnType<typeof summarize>
  pathFoundRate: number
  loadAverage: number[]
  entities: number
  relations: number
  dbMiB: number
  rssMiB: number
  /** --compare-signing: batched ingest/s with signing workers and inline, batch-interleaved. */
  signingAB?: { pooled: number, inline: number, pooledWins: number, batches: number }
}

/** Commits/s of one-row inserts into a fresh database opened like the brain's. */
function bareCommitRate (file: string, commits: number): number {
  const db = openDatabase(file, durability)
  try {
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)')
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)')
    const value = Buffer.alloc(400, 1)
    return commits / (timeMs(() => { for (let i = 0; i < commits; i++) insert.run(value) }) / 1000)
  } finally {
    db.close()
    for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true })
  }
}

/**
 * Batched ingest/s of `inputs` into two fresh brains (signing workers, main thread), interleaved
 * batch by batch with the order flipped every batch. pooledWins: batches where the workers were faster.
 */
async function signingAB (inputs: RememberInput[]): Promise<NonNullable<SizeResult['signingAB']>> {
  const open = async (threads: number): Promise<{ brain: ReturnType<typeof createBrain>, dir: string }> => {
    const dir = mkdtempSync(join(tmpdir(), 'permagent-bench-brain-ab-'))
    const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(generateEd25519()), durability, signingThreads: threads })
    await brain.start()
    return { brain, dir }
  }
  const pooled = await open(defaultSigningThreads())
  const inline = await open(0)
  try {
    let pooledMs = 0
    let inlineMs = 0
    let pooledWins = 0
    let batches = 0
    for (let start = 0; start < inputs.length; start += 1000) {
      const batch = inputs.slice(start, start + 1000)
      let p = 0
      let i = 0
      if (batches % 2 === 0) {
        p = timeMs(() => { pooled.brain.rememberMany(batch, { batchSize: 1000 }) })
        i = timeMs(() => { inline.brain.rememberMany(batch, { batchSize: 1000 }) })
      } else {
        i = timeMs(() => { inline.brain.rememberMany(batch, { batchSize: 1000 }) })
        p = timeMs(() => { pooled.brain.rememberMany(batch, { batchSize: 1000 }) })
      }
      // the first batch starts the workers (and warms both): not counted
      if (start > 0) {
        pooledMs += p
        inlineMs += i
        if (p < i) pooledWins++
        batches++
      } else {
        batches = 0
      }
    }
    const counted = inputs.length - Math.min(1000, inputs.length)
    return { pooled: counted / (pooledMs / 1000), inline: counted / (inlineMs / 1000), pooledWins, batches }
  } finally {
    for (const b of [pooled, inline]) {
      await b.brain.stop()
      rmSync(b.dir, { recursive: true, force: true })
    }
  }
}

async function measure (size: number): Promise<SizeResult> {
  const dir = flags.values.keep === undefined ? mkdtempSync(join(tmpdir(), 'permagent-bench-brain-')) : join(flags.values.keep, String(size))
  const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(generateEd25519()), durability, signingThreads })
  await brain.start()
  try {
    progress(`[${size}] generating corpus`)
    const { memories, contentWords } = corpus(size + singleCount)
    const bulk = memories.slice(0, size)
    progress(`[${size}] batched ingest of ${size}`)
    let bulkIds: string[] = []
    const batchedMs = timeMs(() => { bulkIds = brain.rememberMany(bulk, { batchSize: 1000 }).ids })

    progress(`[${size}] single ingest of ${singleCount}`)
    const singles = memories.slice(size)
    const singleMs = timeMs(() => { for (const m of singles) brain.remember(m) })
    const bareCommitsPerSec = bareCommitRate(join(dir, 'bare.db'), Math.min(singleCount, 1000))

    const random = seededRandom(seed + 1)
    const entityCount = Math.max(100, Math.floor(size / 4))
    const relations: RelateInput[] = []
    const related = new Set<number>()
    for (let i = 0; i < size; i++) {
      const a = Math.floor(random() * entityCount)
      let b = Math.floor(random() * entityCount)
      if (b === a) b = (b + 1) % entityCount
      relations.push(relationFor(a, b))
      related.add(a)
      related.add(b)
    }
    const endpoints = [...related]
    progress(`[${size}] relation ingest of ${size}`)
    const relationMs = timeMs(() => { brain.relateMany(relations, { batchSize: 1000 }) })

    progress(`[${size}] ${queryCount} recalls`)
    const queryWords = ['what', 'about', 'the', 'did', 'we', 'say']
    const recallSamples: number[] = []
    const recallCpuSamples: number[] = []
    const floorSamples: number[] = []
    const probeRandom = seededRandom(seed + 2)
    let withHits = 0
    for (let q = 0; q < queryCount; q++) {
      const words = contentWords[Math.floor(random() * size)]
      const n = 2 + Math.floor(random() * 3)
      const chosen = Array.from({ length: n }, () => pick(random, words))
      const query = (random() < 0.5 ? pick(random, queryWords) + ' ' : '') + chosen.join(' ')
      let hits = 0
      const cpuBefore = process.cpuUsage()
      recallSamples.push(timeMs(() => { hits = brain.recall(query, { limit: 10 }).hits.length }))
      const cpu = process.cpuUsage(cpuBefore)
      recallCpuSamples.push((cpu.user + cpu.system) / 1000)
      if (hits > 0) withHits++
      // the noise floor, interleaved: one primary-key read (a few µs of work) right after each recall
      const id = bulkIds[Math.floor(probeRandom() * bulkIds.length)]
      floorSamples.push(timeMs(() => { brain.get(id) }))
    }

    const expandSamples: number[] = []
    for (let q = 0; q < Math.ceil(queryCount / 4); q++) {
      const words = contentWords[Math.floor(random() * size)]
      const query = Array.from({ length: 2 + Math.floor(random() * 3) }, () => pick(random, words)).join(' ')
      expandSamples.push(timeMs(() => { brain.recall(query, { limit: 10, expand: true }) }))
    }

    progress(`[${size}] ${pathCount} path queries`)
    const pathSamples: number[] = []
    const pathFoundSamples: number[] = []
    let found = 0
    for (let p = 0; p < pathCount; p++) {
      const a = pick(random, endpoints)
      const b = pick(random, endpoints)
      if (a === b) continue
      let n = 0
      const ms = timeMs(() => { n = brain.path(`entity-${a}`, `entity-${b}`, { maxHops: 3 }).paths.length })
      pathSamples.push(ms)
      if (n > 0) { found++; pathFoundSamples.push(ms) }
    }
    const stats = brain.stats()
    let ab: SizeResult['signingAB']
    if (compareCount > 0) {
      progress(`[${size}] signing A/B: ${compareCount} memories, ${defaultSigningThreads()} signing worker(s) vs main thread, batch-interleaved`)
      ab = await signingAB(memories.slice(0, Math.min(compareCount, size)))
    }
    return {
      signingAB: ab,
      size,
      batchedIngestPerSec: size / (batchedMs / 1000),
      singleIngestPerSec: singles.length / (singleMs / 1000),
      bareCommitsPerSec,
      relationIngestPerSec: size / (relationMs / 1000),
      recallMs: summarize(recallSamples),
      recallCpuMs: summarize(recallCpuSamples),
      floorMs: summarize(floorSamples),
      recallHitRate: withHits / queryCount,
      recallExpandMs: summarize(expandSamples),
      pathMs: summarize(pathSamples),
      pathFoundMs: summarize(pathFoundSamples),
      pathFoundRate: found / pathSamples.length,
      loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
      entities: stats.entities,
      relations: stats.relations.total,
      dbMiB: stats.dbBytes / (1024 * 1024),
      rssMiB: rssMiB()
    }
  } finally {
    await brain.stop()
    if (flags.values.keep === undefined) rmSync(dir, { recursive: true, force: true })
  }
}

const results: SizeResult[] = []
for (const size of sizes) results.push(await measure(size))

const targets = { recallP50Ms: 0.5, recallP99Ms: 2, batchedIngestPerSec: 20_000, singleIngestPerSec: 3_000, pathP50Ms: 2 }
const largest = results[results.length - 1]
const verdict = {
  recallP50: largest.recallMs.p50 <= targets.recallP50Ms,
  recallP99: largest.recallMs.p99 <= targets.recallP99Ms,
  batchedIngest: Math.min(...results.map((r) => r.batchedIngestPerSec)) >= targets.batchedIngestPerSec,
  singleIngest: Math.min(...results.map((r) => r.singleIngestPerSec)) >= targets.singleIngestPerSec,
  pathP50: largest.pathMs.p50 <= targets.pathP50Ms
}
const rows: Cell[][] = results.map((r) => [
  r.size, Math.round(r.batchedIngestPerSec), Math.round(r.singleIngestPerSec), Math.round(r.bareCommitsPerSec), Math.round(r.relationIngestPerSec),
  r.recallMs.p50, r.recallMs.p99, r.recallCpuMs.p50, r.recallCpuMs.p99, r.floorMs.p50, r.floorMs.p99, r.recallExpandMs.p50, r.pathMs.p50, r.pathFoundMs.p50, r.pathMs.p99, r.dbMiB, r.rssMiB, r.loadAverage[0]
])
report(flags, { benchmark: 'brain', durability, signingThreads, node: process.version, sizes, queries: queryCount, single: singleCount, results, targets, verdict }, [
  {
    title: `brain (durability ${durability}, ${queryCount} recalls, ${singleCount} single ingests, ${pathCount} paths per size)`,
    headers: ['size', 'batched/s', 'single/s', 'bare commits/s', 'relations/s', 'recall p50 ms', 'recall p99 ms', 'recall cpu p50', 'recall cpu p99', 'get p50 ms', 'get p99 ms', 'expand p50 ms', 'path p50 ms', 'path found p50', 'path p99 ms', 'db MiB', 'RSS MiB', 'load'],
    rows
  },
  {
    title: `targets at ${largest.size}`,
    headers: ['target', 'value', 'met'],
    rows: [
      ['recall p50 <= 0.5 ms', largest.recallMs.p50, verdict.recallP50],
      ['recall p99 <= 2 ms', largest.recallMs.p99, verdict.recallP99],
      ['batched ingest >= 20,000/s (every size)', Math.round(Math.min(...results.map((r) => r.batchedIngestPerSec))), verdict.batchedIngest],
      ['single ingest >= 3,000/s (every size)', Math.round(Math.min(...results.map((r) => r.singleIngestPerSec))), verdict.singleIngest],
      ['path (<= 3 hops) p50 <= 2 ms', largest.pathMs.p50, verdict.pathP50]
    ]
  }
], [
  ...results.filter((r) => r.signingAB !== undefined).map((r) => `size ${r.size}: signing A/B (fresh brains, batches interleaved): ${Math.round(r.signingAB?.pooled ?? 0)}/s with ${defaultSigningThreads()} signing worker(s), ${Math.round(r.signingAB?.inline ?? 0)}/s on the main thread; workers faster in ${r.signingAB?.pooledWins} of ${r.signingAB?.batches} batches`),
  `signing threads ${signingThreads}`,
  ...results.map((r) => `size ${r.size}: ${(r.recallHitRate * 100).toFixed(1)} % of recalls returned hits; ${(r.pathFoundRate * 100).toFixed(1)} % of path queries found a path; ${r.entities} entities, ${r.relations} relations; 1-minute load average ${r.loadAverage[0]} on ${availableParallelism()} CPUs`),
  '"bare commits/s": one-row commits to a fresh SQLite file with the same pragmas, right after the single ingest (the disk\'s ceiling for single ingest)',
  '"get" columns: brain.get of a random memory right after each recall, a few µs of work: its p99 is what the machine (scheduling, other load) adds to any call',
  'latencies are wall-clock; "cpu" columns are this process\'s CPU time per recall (less sensitive to other load on the machine)'
])
