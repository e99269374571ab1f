// Runs a simulation scenario and prints its report: a table, or one JSON object with --json.
//   npm run sim -- connect --nodes 20 [--topology full|ring|random-k|star] [--k 3] [--seed 1]
//                          [--mode memory|process] [--timeout-ms 60000] [--json] [--report FILE]
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { TOPOLOGY_KINDS, type TopologyKind } from '../src/simulation/index.ts'
import { runConnectScenario } from './scenarios/connect.ts'

const scenarios = ['connect'] as const

function fail (message: string): never {
  process.stderr.write(`error: ${message}\n`)
  process.exit(2)
}

function integer (name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value == null) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be a whole number from ${min} to ${max}, got "${value}"`)
  return n
}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        nodes: { type: 'string' },
        topology: { type: 'string' },
        k: { type: 'string' },
        seed: { type: 'string' },
        mode: { type: 'string' },
        'timeout-ms': { type: 'string' },
        json: { type: 'boolean' },
        report: { type: 'string' }
      }
    })
  } catch (err) {
    fail((err as Error).message)
  }
})()

const scenario = positionals[0]
if (scenario == null || !(scenarios as readonly string[]).includes(scenario)) fail(`name a scenario: ${scenarios.join(', ')}`)
const topology = (values.topology ?? 'random-k') as TopologyKind
if (!TOPOLOGY_KINDS.includes(topology)) fail(`--topology must be one of ${TOPOLOGY_KINDS.join(', ')}`)
const mode = values.mode ?? 'memory'
if (mode !== 'memory' && mode !== 'process') fail('--mode must be memory (in-process) or process (daemons on loopback)')

const report = await runConnectScenario({
  nodes: integer('nodes', values.nodes, 20, 1, 500),
  topology,
  k: integer('k', values.k, 3, 1, 100),
  seed: integer('seed', values.seed, 1, 0, 2 ** 31),
  mode,
  timeoutMs: integer('timeout-ms', values['timeout-ms'], 60_000, 1000, 3_600_000)
}).catch((err: unknown) => {
  process.stderr.write(`error: the scenario failed: ${(err as Error).message}\n`)
  process.exit(1)
})

if (values.report != null) await writeFile(values.report, JSON.stringify(report, null, 2) + '\n')
if (values.json === true) {
  process.stdout.write(JSON.stringify(report) + '\n')
} else {
  const rows: Array<[string, string]> = [
    ['scenario', `${report.scenario} (${report.mode === 'memory' ? 'in-process, memory transport' : 'daemons on loopback TCP'})`],
    ['nodes / topology / edges', `${report.nodes} / ${report.topology} / ${report.edges}`],
    ['nodes started in', `${report.startMs.toFixed(0)} ms`],
    ['every edge connected after', `${report.connectedMs.toFixed(0)} ms`],
    ['every routing table >= 1 peer after', `${report.routingTablesMs.toFixed(0)} ms`],
    ['routing table size min/median/max', `${report.routingTable.min} / ${report.routingTable.median} / ${report.routingTable.max}`],
    ['connected peers min/median/max', `${report.peersPerNode.min} / ${report.peersPerNode.median} / ${report.peersPerNode.max}`]
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n')
}
process.exit(0)
