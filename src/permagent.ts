import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { BRAIN_FILE, createBrain, type Brain, type BrainLimits, type Durability, type OntologyDefinition } from './brain/index.ts'
import { createBrainBridge, createTeamService, type BrainBridge, type TeamService } from './team/index.ts'
import { identityFromKeyPair, loadOrCreateKeyFile, type Identity } from './identity/index.ts'
import { createMeshNode, type MeshNode, type PeerSummary } from './mesh/index.ts'
import { createSkillsService, type SkillLimits, type SkillsService, type SkillTrustPolicy } from './skills/index.ts'
import { createSessionHost, type SessionHost, type SessionHostLimits, type SessionMigrationSettings } from './sessions/index.ts'
import { silentLogger, type Logger } from './util/logger.ts'
import { PERMAGENT_VERSION } from './version.ts'

export const KEY_FILE_NAME = 'identity.key'

export interface NetworkOptions {
  listen: string[]
  announce?: string[]
  bootstrap?: string[]
  mdns?: boolean
  mdnsIntervalMs?: number
  psk?: Uint8Array
  memoryLatencyMs?: number
  targetPeers?: number
}

export interface PermagentOptions {
  /** Where the node keeps its key, brain and stores. Created if missing (mode 0700). */
  dataDir: string
  network: NetworkOptions
  logger?: Logger
  /** Use this identity instead of the key file in dataDir (tests, embedding). */
  identity?: Identity
  /** The brain (dataDir/brain.db): limits, ontology (definition or JSON file path), durability. */
  brain?: { limits?: Partial<BrainLimits>, ontology?: OntologyDefinition | string, durability?: Durability }
  /** Teams: per-author trust weights for recall ranking, anti-entropy period, clock-skew bound. */
  team?: { trust?: Record<string, number>, syncIntervalMs?: number, maxClockSkewMs?: number, now?: () => number }
  /** Skills: the install trust policy (merged with dataDir/skills/policy.json), lower packing limits, clock. */
  skills?: { policy?: SkillTrustPolicy, limits?: Partial<SkillLimits>, now?: () => number }
  /**
   * Hosted generation sessions: limits, migration tuning, and whether sessions may migrate in
   * (acceptMigrations, default true; inbound peers must also pass the connection gater).
   */
  sessions?: { limits?: Partial<SessionHostLimits>, acceptMigrations?: boolean, threads?: number, maxContext?: number, migration?: SessionMigrationSettings }
}

export interface NodeStatus {
  version: string
  peerId: string
  brainId: string
  addresses: string[]
  peers: PeerSummary[]
  routingTableSize: number
  startedAt: string | null
  uptimeMs: number
}

/** A part of the node with a lifecycle; started in order, stopped in reverse. */
export interface NodeService {
  name: string
  start: () => Promise<void>
  stop: () => Promise<void>
}

/** A whole Permagent node: identity, mesh, and the modules that run on them. */
export interface Permagent {
  readonly dataDir: string
  readonly identity: Identity
  readonly mesh: MeshNode
  /** The local memory engine and knowledge graph (dataDir/brain.db). */
  readonly brain: Brain
  /** Teams this node belongs to: membership, signed shards, gossip and sync. */
  readonly team: TeamService
  /** Remember/recall/forget across the brain and the teams (the one place records leave the node). */
  readonly shared: BrainBridge
  /** Signed skills on the teams: publish, install, yank, activity suggestions (dataDir/skills). */
  readonly skills: SkillsService
  /** Generation sessions hosted here: create, continue, migrate to peers (USXF), drain. */
  readonly sessions: SessionHost
  readonly logger: Logger
  start: () => Promise<void>
  stop: () => Promise<void>
  status: () => NodeStatus
  readonly started: boolean
}

/**
 * Assembles a node from the modules. The daemon and the swarm harness both build nodes here, so a
 * simulated swarm runs exactly what users run.
 */
export async function createPermagent (options: PermagentOptions): Promise<Permagent> {
  const logger = options.logger ?? silentLogger()
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 })
  const identity = options.identity ?? await identityFromKeyPair((await loadOrCreateKeyFile(join(options.dataDir, KEY_FILE_NAME))).pair)
  const mesh = await createMeshNode({
    identity,
    logger: logger.child({ module: 'mesh' }),
    listen: options.network.listen,
    announce: options.network.announce,
    bootstrap: options.network.bootstrap,
    mdns: options.network.mdns,
    mdnsIntervalMs: options.network.mdnsIntervalMs,
    psk: options.network.psk,
    memoryLatencyMs: options.network.memoryLatencyMs,
    targetPeers: options.network.targetPeers
  })

  const brain = createBrain({
    dataDir: options.dataDir,
    identity,
    logger: logger.child({ module: 'brain' }),
    limits: options.brain?.limits,
    ontology: options.brain?.ontology,
    durability: options.brain?.durability
  })

  // the team store lives in brain.db beside the records its shards carry, on its own connection
  const teamDb = new Database(join(options.dataDir, BRAIN_FILE))
  teamDb.pragma('journal_mode = WAL')
  teamDb.pragma(`synchronous = ${options.brain?.durability === 'normal' ? 'NORMAL' : 'FULL'}`)
  teamDb.pragma('busy_timeout = 5000')
  // bulk catch-up writes many pages: checkpoint (and fsync) every 64 MiB of WAL, not every 4 MiB
  teamDb.pragma('wal_autocheckpoint = 16384')
  const team = createTeamService({
    identity,
    mesh,
    db: teamDb,
    logger: logger.child({ module: 'team' }),
    trust: options.team?.trust,
    syncIntervalMs: options.team?.syncIntervalMs,
    maxClockSkewMs: options.team?.maxClockSkewMs,
    now: options.team?.now
  })
  const shared = createBrainBridge({ brain, team, logger: logger.child({ module: 'team' }) })
  team.setMemoryPort(shared.port)
  const skills = createSkillsService({
    dataDir: options.dataDir,
    identity,
    mesh,
    team,
    logger: logger.child({ module: 'skills' }),
    policy: options.skills?.policy,
    limits: options.skills?.limits,
    now: options.skills?.now
  })
  team.setSkillPort(skills.teamPort)
  const sessions = createSessionHost({
    libp2p: mesh.libp2p,
    identity,
    dataDir: options.dataDir,
    logger,
    // the gater admitted the peer when it connected; its current verdict decides what migrates in
    acceptFrom: (peer) => mesh.gater.allows(peer),
    ...options.sessions
  })

  const services: NodeService[] = [
    { name: 'brain', start: brain.start, stop: brain.stop },
    { name: 'mesh', start: mesh.start, stop: mesh.stop },
    { name: 'team', start: team.start, stop: async () => { await team.stop(); teamDb.close() } },
    { name: 'skills', start: skills.start, stop: skills.stop },
    { name: 'sessions', start: sessions.start, stop: sessions.stop }
  ]
  const running: NodeService[] = []
  let startedAt: Date | null = null

  const stop = async (): Promise<void> => {
    while (running.length > 0) {
      const service = running.pop()
      if (service == null) break
      try {
        await service.stop()
      } catch (err) {
        logger.warn({ service: service.name, err }, 'service failed to stop cleanly')
      }
    }
    startedAt = null
  }

  return {
    dataDir: options.dataDir,
    identity,
    mesh,
    brain,
    team,
    shared,
    skills,
    sessions,
    logger,
    get started () { return startedAt != null },
    async start () {
      if (startedAt != null) return
      try {
        for (const service of services) {
          await service.start()
          running.push(service)
        }
      } catch (err) {
        await stop()
        throw err
      }
      startedAt = new Date()
    },
    stop,
    status: () => ({
      version: PERMAGENT_VERSION,
      peerId: identity.peerId.toString(),
      brainId: identity.brainId,
      addresses: mesh.addresses(),
      peers: mesh.peers(),
      routingTableSize: mesh.routingTableSize(),
      startedAt: startedAt?.toISOString() ?? null,
      uptimeMs: startedAt != null ? Date.now() - startedAt.getTime() : 0
    })
  }
}
