/**
 * Shared helpers for benchmarks: argument flags, percentiles, a seeded PRNG, and output that is
 * either a table (default) or exactly one JSON object on stdout (--json).
 */
import { parseArgs } from 'node:util'

export interface BenchFlags {
  json: boolean
  values: Record<string, string | undefined>
}

/** Parses `--json` and the given `--name value` string options (unknown flags are errors). */
export function benchFlags (options: Record<string, { default?: string, description: string }>): BenchFlags {
  const parsed = parseArgs({
    args: process.argv.slice(2),
    options: {
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
      ...Object.fromEntries(Object.entries(options).map(([name, o]) => [name, { type: 'string' as const, default: o.default }]))
    },
    allowPositionals: false
  })
  if (parsed.values.help === true) {
    process.stdout.write('flags:\n  --json  print one JSON object instead of tables\n')
    for (const [name, o] of Object.entries(options)) process.stdout.write(`  --${name} ${o.default === undefined ? '' : `(default ${o.default})`}  ${o.description}\n`)
    process.exit(0)
  }
  return { json: parsed.values.json === true, values: parsed.values as unknown as Record<string, string | undefined> }
}

export function intList (text: string | undefined, fallback: number[]): number[] {
  if (text === undefined) return fallback
  const values = text.split(',').map((s) => Number(s.trim().replace(/_/g, '').replace(/k$/i, '000')))
  for (const v of values) if (!Number.isInteger(v) || v <= 0) throw new Error(`expected positive integers, got ${text}`)
  return values
}

/** The p-th percentile (0..100) of samples, by nearest rank. */
export function percentile (samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN
  const sorted = Float64Array.from(samples).sort()
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

export function summarize (samples: number[]): { n: number, p50: number, p90: number, p99: number, max: number, mean: number } {
  const mean = samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length)
  return { n: samples.length, p50: percentile(samples, 50), p90: percentile(samples, 90), p99: percentile(samples, 99), max: percentile(samples, 100), mean }
}

/** Times `fn` once, in milliseconds. */
export function timeMs (fn: () => void): number {
  const start = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - start) / 1e6
}

/** mulberry32: a small seeded PRNG, so every run builds the same corpus. */
export function seededRandom (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function pick<T> (random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]
}

/** Samples ranks 0..n-1 with a Zipf(s) law, by inverse CDF over a precomputed table. */
export function zipfSampler (random: () => number, n: number, s = 1.0): () => number {
  const cdf = new Float64Array(n)
  let total = 0
  for (let i = 0; i < n; i++) { total += 1 / Math.pow(i + 1, s); cdf[i] = total }
  return () => {
    const target = random() * total
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cdf[mid] < target) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

export type Cell = string | number | boolean | null | undefined

function format (cell: Cell): string {
  if (typeof cell === 'number') {
    if (!Number.isFinite(cell)) return String(cell)
    if (Number.isInteger(cell)) return cell.toLocaleString('en-US')
    return Math.abs(cell) >= 100 ? cell.toFixed(0) : Math.abs(cell) >= 1 ? cell.toFixed(2) : cell.toFixed(3)
  }
  return cell == null ? '' : String(cell)
}

/** Renders rows as an aligned text table with a header line. */
export function table (headers: string[], rows: Cell[][]): string {
  const cells = rows.map((row) => row.map(format))
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)))
  const line = (values: string[]): string => values.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ')
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n')
}

/** Prints either the tables (with titles) or one JSON object. */
export function report (flags: BenchFlags, json: unknown, tables: Array<{ title: string, headers: string[], rows: Cell[][] }>, notes: string[] = []): void {
  if (flags.json) {
    process.stdout.write(JSON.stringify(json) + '\n')
    return
  }
  for (const t of tables) process.stdout.write(`\n${t.title}\n${table(t.headers, t.rows)}\n`)
  for (const note of notes) process.stdout.write(`${note}\n`)
}

/** Progress and diagnostics go to stderr so --json output stays one object. */
export function progress (message: string): void {
  process.stderr.write(`${message}\n`)
}

export function rssMiB (): number {
  return process.memoryUsage().rss / (1024 * 1024)
}
