import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createPermagent, type Permagent, type PermagentOptions } from '../permagent.ts'
import { silentLogger, type Logger } from '../util/logger.ts'
import { topologyEdges, type TopologyKind } from './topology.ts'
import { waitUntil } from './wait.ts'

export interface SwarmOptions {
  nodes: number
  topology?: TopologyKind
  /** Random dials per node for random-k (default 3). */
  k?: number
  seed?: number
  /** Added latency per message on every link, in ms. */
  latencyMs?: number
  /** Where node data dirs go (default: a new temp dir, removed by stop()). */
  baseDir?: string
  logger?: Logger
  /** Extra options per node (index → overrides), e.g. to give one node a different role. */
  nodeOptions?: (index: number) => Partial<PermagentOptions>
}

/** N full Permagent nodes in this process on the memory transport, wired in a topology. */
export interface Swarm {
  readonly nodes: Permagent[]
  readonly edges: Array<[number, number]>
  /** Dials the topology's edges (in parallel, bounded). */
  connect: (options?: { timeoutMs?: number }) => Promise<void>
  /** Waits until every topology edge is an open connection. */
  waitForTopology: (options?: { timeoutMs?: number }) => Promise<void>
  /** Waits until every node's DHT routing table holds at least `min` peers. */
  waitForRoutingTables: (min?: number, options?: { timeoutMs?: number }) => Promise<void>
  /** Adds a node (a late joiner); it is not connected until you dial. */
  addNode: (overrides?: Partial<PermagentOptions>) => Promise<Permagent>
  stop: () => Promise<void>
}

function connected (a: Permagent, b: Permagent): boolean {
  return a.mesh.libp2p.getConnections(b.mesh.peerId).length > 0
}

export async function createSwarm (options: SwarmOptions): Promise<Swarm> {
  const logger = options.logger ?? silentLogger()
  const ownsBaseDir = options.baseDir == null
  const baseDir = options.baseDir ?? await mkdtemp(join(tmpdir(), 'permagent-swarm-'))
  const swarmId = randomBytes(4).toString('hex')
  const edges = topologyEdges(options.topology ?? 'full', options.nodes, { k: options.k, seed: options.seed })
  const nodes: Permagent[] = []

  const makeNode = async (index: number, overrides: Partial<PermagentOptions> = {}): Promise<Permagent> => {
    const node = await createPermagent({
      dataDir: join(baseDir, `node-${index}`),
      logger: logger.child({ node: index }),
      ...overrides,
      network: {
        listen: [`/memory/${swarmId}-${index}`],
        mdns: false,
        memoryLatencyMs: options.latencyMs,
        ...overrides.network
      }
    })
    await node.start()
    return node
  }

  try {
    const built = await Promise.all(Array.from({ length: options.nodes }, async (_, i) => await makeNode(i, options.nodeOptions?.(i))))
    nodes.push(...built)
  } catch (err) {
    await Promise.allSettled(nodes.map(async (n) => { await n.stop() }))
    if (ownsBaseDir) await rm(baseDir, { recursive: true, force: true })
    throw err
  }

  const allEvents = (type: string): Array<{ target: EventTarget, type: string }> => nodes.map((n) => ({ target: n.mesh.libp2p as unknown as EventTarget, type }))

  const swarm: Swarm = {
    nodes,
    edges,
    async connect (connectOptions = {}) {
      const pending = [...edges]
      const workers = Array.from({ length: Math.min(8, pending.length) }, async () => {
        for (let edge = pending.shift(); edge != null; edge = pending.shift()) {
          const [a, b] = edge
          if (connected(nodes[a], nodes[b])) continue
          await nodes[a].mesh.connect(nodes[b].mesh.addresses()[0], { signal: AbortSignal.timeout(connectOptions.timeoutMs ?? 20_000) })
        }
      })
      await Promise.all(workers)
    },
    async waitForTopology (waitOptions = {}) {
      await waitUntil(() => edges.every(([a, b]) => connected(nodes[a], nodes[b])), {
        events: allEvents('connection:open'),
        timeoutMs: waitOptions.timeoutMs,
        what: 'every topology edge connected'
      })
    },
    async waitForRoutingTables (min = 1, waitOptions = {}) {
      const tables = nodes.map((n) => ({ target: (n.mesh.libp2p.services.dht as unknown as { routingTable: EventTarget }).routingTable, type: 'peer:add' }))
      await waitUntil(() => nodes.every((n) => n.mesh.routingTableSize() >= min), {
        events: [...tables, ...allEvents('peer:identify')],
        timeoutMs: waitOptions.timeoutMs,
        what: `every routing table holding >= ${min} peers`
      })
    },
    async addNode (overrides = {}) {
      const node = await makeNode(nodes.length, overrides)
      nodes.push(node)
      return node
    },
    async stop () {
      await Promise.allSettled(nodes.map(async (n) => { await n.stop() }))
      if (ownsBaseDir) await rm(baseDir, { recursive: true, force: true })
    }
  }
  return swarm
}
