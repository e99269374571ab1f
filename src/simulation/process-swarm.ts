import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connectToDaemon, readDaemonInfo, type ApiClient, type DaemonInfo } from '../client/index.ts'
import type { NodeStatus } from '../permagent.ts'
import { PermagentError } from '../util/errors.ts'
import { waitFor } from '../util/wait-for.ts'
import { topologyEdges, type TopologyKind } from './topology.ts'

export interface ProcessSwarmOptions {
  nodes: number
  topology?: TopologyKind
  k?: number
  seed?: number
  baseDir?: string
  /** The `permagent` launcher to run (default: this package's bin/permagent.js). */
  cliPath?: string
  /** Extra `permagent start` flags for node i. */
  extraArgs?: (index: number) => string[]
  env?: NodeJS.ProcessEnv
  startTimeoutMs?: number
}

export interface ProcessMember {
  index: number
  dataDir: string
  process: ChildProcess
  info: DaemonInfo
  api: ApiClient
  output: () => string
}

/** N real daemons as child processes on loopback TCP, driven through their control APIs. */
export interface ProcessSwarm {
  readonly members: ProcessMember[]
  readonly edges: Array<[number, number]>
  connect: () => Promise<void>
  status: (index: number) => Promise<NodeStatus>
  waitForTopology: (options?: { timeoutMs?: number }) => Promise<void>
  waitForRoutingTables: (min?: number, options?: { timeoutMs?: number }) => Promise<void>
  /** SIGKILL one member (crash test). */
  kill: (index: number) => Promise<void>
  /** Start a member again on the same data dir (keeps its identity). */
  restart: (index: number) => Promise<ProcessMember>
  stop: () => Promise<void>
}

/** The package root: the nearest folder above this file with our package.json. */
function packageRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const manifest = join(dir, 'package.json')
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'permagent-mesh') return dir
    const parent = dirname(dir)
    if (parent === dir) throw new PermagentError('ERR_NOT_FOUND', 'cannot find the permagent-mesh package root to start daemons from; pass cliPath')
    dir = parent
  }
}

export async function createProcessSwarm (options: ProcessSwarmOptions): Promise<ProcessSwarm> {
  const cliPath = options.cliPath ?? join(packageRoot(), 'bin', 'permagent.js')
  const ownsBaseDir = options.baseDir == null
  const baseDir = options.baseDir ?? await mkdtemp(join(tmpdir(), 'permagent-procswarm-'))
  const edges = topologyEdges(options.topology ?? 'full', options.nodes, { k: options.k, seed: options.seed })
  const members: ProcessMember[] = []

  const launch = async (index: number): Promise<ProcessMember> => {
    const dataDir = join(baseDir, `node-${index}`)
    const args = [cliPath, 'start', '--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api-port', '0', '--no-mdns', ...(options.extraArgs?.(index) ?? [])]
    const child = spawn(process.execPath, args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-64 * 1024) })
    child.stderr?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-64 * 1024) })
    let exited: number | null | undefined
    child.on('exit', (code) => { exited = code })
    const info = await waitFor(async () => {
      if (exited !== undefined) throw new PermagentError('ERR_DAEMON_EXITED', `node ${index} exited (${String(exited)}) before it was ready:\n${output}`)
      const found = await readDaemonInfo(join(dataDir, 'daemon.json'))
      return found?.pid === child.pid ? found : undefined
    }, { timeoutMs: options.startTimeoutMs ?? 60_000, intervalMs: 50, what: `daemon ${index} to start` })
    return { index, dataDir, process: child, info, api: await connectToDaemon(dataDir), output: () => output }
  }

  const killMember = async (member: ProcessMember, signal: NodeJS.Signals): Promise<void> => {
    if (member.process.exitCode != null || member.process.signalCode != null) return
    const done = new Promise<void>((resolve) => { member.process.once('exit', () => { resolve() }) })
    member.process.kill(signal)
    await done
  }

  try {
    members.push(...await Promise.all(Array.from({ length: options.nodes }, async (_, i) => await launch(i))))
  } catch (err) {
    await Promise.allSettled(members.map(async (m) => { await killMember(m, 'SIGKILL') }))
    if (ownsBaseDir) await rm(baseDir, { recursive: true, force: true })
    throw err
  }

  const status = async (index: number): Promise<NodeStatus> => await members[index].api.call<NodeStatus>('GET', '/api/status')

  return {
    members,
    edges,
    async connect () {
      for (const [a, b] of edges) {
        await members[a].api.call('POST', '/api/connect', { multiaddr: members[b].info.addresses[0] })
      }
    },
    status,
    async waitForTopology (waitOptions = {}) {
      await waitFor(async () => {
        const statuses = await Promise.all(members.map(async (m) => await status(m.index)))
        return edges.every(([a, b]) => statuses[a].peers.some((p) => p.peerId === members[b].info.peerId))
      }, { timeoutMs: waitOptions.timeoutMs ?? 30_000, intervalMs: 100, what: 'every topology edge connected' })
    },
    async waitForRoutingTables (min = 1, waitOptions = {}) {
      await waitFor(async () => {
        const statuses = await Promise.all(members.map(async (m) => await status(m.index)))
        return statuses.every((s) => s.routingTableSize >= min)
      }, { timeoutMs: waitOptions.timeoutMs ?? 30_000, intervalMs: 100, what: `every routing table holding >= ${min} peers` })
    },
    async kill (index) {
      await killMember(members[index], 'SIGKILL')
    },
    async restart (index) {
      await killMember(members[index], 'SIGTERM')
      members[index] = await launch(index)
      return members[index]
    },
    async stop () {
      await Promise.allSettled(members.map(async (m) => { await killMember(m, 'SIGTERM') }))
      if (ownsBaseDir) await rm(baseDir, { recursive: true, force: true })
    }
  }
}
