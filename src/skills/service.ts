import { join } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import type { Identity } from '../identity/index.ts'
import type { MeshNode } from '../mesh/index.ts'
import { UnknownTeamError, type TeamService } from '../team/index.ts'
import { isPermagentError, PermagentError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { checkActivityEvent, openActivityLog, type ActivityEvent, type ActivityLog, type Suggestion } from './activity.ts'
import { encodePublish, encodeYank, parseAnnouncement, type SkillAnnouncement } from './announce.ts'
import { decodeBundle, MAX_BUNDLE_BYTES, packSkill, type ManifestFile, type SkillBundle, type SkillLimits } from './bundle.ts'
import { Catalog, parseSkillSpec, statusOf, type AnnouncedShard, type Publication, type PublicationStatus } from './catalog.ts'
import { SkillError } from './errors.ts'
import type { SkillInput } from './front-matter.ts'
import { checkTrust, loadPolicy, type SkillTrustPolicy } from './policy.ts'
import { findBundleProviders, provideBundle } from './providers.ts'
import { compareSemver } from './semver.ts'
import { openSkillStore, type InstallRecord, type SkillStore } from './store.ts'

export type TeamSkillPort = Parameters<TeamService['setSkillPort']>[0]

export interface SkillsServiceOptions {
  /** The node's data dir; skills live in <dataDir>/skills. */
  dataDir: string
  identity: Identity
  mesh: MeshNode
  team: TeamService
  logger: Logger
  /** Trust policy (merged with <dataDir>/skills/policy.json). */
  policy?: SkillTrustPolicy
  /** Lower packing limits than the protocol's (SKILL_LIMITS). */
  limits?: Partial<SkillLimits>
  now?: () => number
  /** DHT provider lookup deadline per install (default 5 s). */
  providerLookupMs?: number
  /** Deadline of one fetch from one peer (default 30 s). */
  fetchTimeoutMs?: number
  /** Deadline of a whole install, lookups and fetches included (default 120 s). */
  installTimeoutMs?: number
}

export interface SkillSummary {
  name: string
  version: string
  description: string
  runner: string
  author: string
  bundle: string
  size: number
  status: PublicationStatus
  teams: string[]
  publishedAt: string
  yankReason?: string
  /** Other bundles the author published under the same name@version (equivocation). */
  conflicts: string[]
  installed: boolean
}

export interface SkillDetails extends SkillSummary {
  entry: string
  inputs: SkillInput[]
  files: ManifestFile[]
  authorKey: string
}

export interface InstalledSkill extends InstallRecord {
  path: string
  /** What the teams say of the installed bundle now (unknown: its announcement is not visible here). */
  status: PublicationStatus | 'unknown'
}

export interface SkillListing {
  skills: SkillSummary[]
  equivocations: Array<{ author: string, name: string, version: string, bundles: string[] }>
  installed: InstalledSkill[]
}

export interface PublishResult {
  name: string
  version: string
  bundle: string
  size: number
  files: number
  teamId: string
  shardId: string
  /** The same bundle was already announced in this team (nothing new was published). */
  alreadyPublished: boolean
}

export interface InstallOptions {
  teamId?: string
  /** The author's brain id (or a prefix of 8+ characters), when several publish the name. */
  author?: string
  allowYanked?: boolean
  signal?: AbortSignal
}

export interface InstallResult {
  name: string
  version: string
  bundle: string
  author: string
  path: string
  /** 'local' (the bundle was held here) or the peer id it came from. */
  source: string
  alreadyInstalled: boolean
  yanked: boolean
}

export interface UpgradeResult {
  name: string
  from: string
  to?: string
  upgraded: boolean
  error?: { code: string, message: string }
}

export interface YankResult {
  name: string
  version: string
  bundles: string[]
  teams: string[]
}

export interface SkillsService {
  /** <dataDir>/skills */
  readonly dir: string
  /** Set on the team service (setSkillPort) before it starts. */
  readonly teamPort: TeamSkillPort
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Packs DIR, stores the bundle, announces it on the team and provides it on the DHT. */
  publish: (dir: string, teamId: string) => Promise<PublishResult>
  list: (options?: { teamId?: string }) => Promise<SkillListing>
  show: (spec: string, options?: { teamId?: string, author?: string }) => Promise<{ selected: SkillDetails, versions: SkillSummary[], installed?: InstalledSkill }>
  install: (spec: string, options?: InstallOptions) => Promise<InstallResult>
  upgrade: (name?: string, options?: { signal?: AbortSignal }) => Promise<UpgradeResult[]>
  remove: (name: string) => Promise<{ name: string, version: string }>
  /** Withdraws one of this node's own versions (a signed yank shard in every team that carries it). */
  yank: (spec: string, options?: { teamId?: string, reason?: string }) => Promise<YankResult>
  installed: () => Promise<InstalledSkill[]>
  /** Keeps the shape of one activity event (never its argument values). */
  recordActivity: (event: ActivityEvent) => { shape: string }
  suggest: (options?: { minRepeats?: number, windowMs?: number }) => Suggestion[]
}

const hexToBytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, 'hex'))
const noop = (): void => {}

function keyOfPeer (peer: PeerId): string | undefined {
  const raw = peer.publicKey?.raw
  return raw != null && raw.length === 32 ? Buffer.from(raw).toString('hex') : undefined
}

function summaryOf (p: Publication, installedBundles: Set<string>): SkillSummary {
  const first = [...p.announcements].sort((a, b) => a.hlc.wallMs - b.hlc.wallMs)[0]
  return {
    name: p.name,
    version: p.version,
    description: p.manifest.description,
    runner: p.manifest.runner,
    author: p.author,
    bundle: p.bundle,
    size: p.size,
    status: statusOf(p),
    teams: p.announcements.map((a) => a.teamId),
    publishedAt: new Date(first?.hlc.wallMs ?? 0).toISOString(),
    ...(p.yank?.reason != null ? { yankReason: p.yank.reason } : {}),
    conflicts: p.conflicts,
    installed: installedBundles.has(p.bundle)
  }
}

export function createSkillsService (options: SkillsServiceOptions): SkillsService {
  const { identity, mesh, team, logger } = options
  const dir = join(options.dataDir, 'skills')
  const store: SkillStore = openSkillStore(dir)
  const ownKey = Buffer.from(identity.publicKey).toString('hex')
  const providerLookupMs = options.providerLookupMs ?? 5_000
  const fetchTimeoutMs = options.fetchTimeoutMs ?? 30_000
  const installTimeoutMs = options.installTimeoutMs ?? 120_000
  const parsed = new Map<string, SkillAnnouncement | null>()
  let activity: ActivityLog | undefined
  let controller = new AbortController()
  let running = false

  // installs, upgrades and removals run one at a time: each reads and replaces installed/<name>
  let chain: Promise<unknown> = Promise.resolve()
  const exclusive = async <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn, fn)
    chain = run.then(noop, noop)
    return await run
  }

  const announcementOf = (shard: Parameters<TeamSkillPort['checkBody']>[0]): SkillAnnouncement | null => {
    let announcement = parsed.get(shard.id)
    if (announcement === undefined) {
      try {
        announcement = parseAnnouncement(shard)
      } catch {
        announcement = null
      }
      parsed.set(shard.id, announcement)
    }
    return announcement
  }

  const catalog = (): Catalog => {
    const shards: AnnouncedShard[] = []
    for (const { teamId } of team.store.teams()) {
      for (const shard of team.shardsOfKind(teamId, 'skill')) {
        const announcement = announcementOf(shard)
        if (announcement != null) shards.push({ teamId, shard, announcement })
      }
    }
    return new Catalog(shards)
  }

  const requireRunning = (): void => {
    if (!running) throw new PermagentError('ERR_NOT_STARTED', 'the skills service is not running')
  }

  /** Provider record for a held bundle (failures are logged: the DHT may have no peers yet). */
  const provide = async (bundleId: string): Promise<void> => {
    if (!running) return
    await provideBundle(mesh.libp2p, bundleId, AbortSignal.any([controller.signal, AbortSignal.timeout(60_000)]), logger)
  }
  const provideInBackground = (bundleId: string): void => { void provide(bundleId) }

  const teamPort: TeamSkillPort = {
    maxBundleBytes: MAX_BUNDLE_BYTES,
    checkBody (shard) {
      const announcement = parseAnnouncement(shard)
      parsed.set(shard.id, announcement)
    },
    async getBundles (teamId, ids) {
      // serve only bundles announced in the asking team, so one team's skills do not leak to another
      const announced = new Set<string>()
      for (const shard of team.shardsOfKind(teamId, 'skill')) {
        const announcement = announcementOf(shard)
        if (announcement?.type === 'publish') announced.add(announcement.bundle)
      }
      return await Promise.all(ids.map(async (id) => {
        const hex = Buffer.from(id).toString('hex')
        return announced.has(hex) ? await store.readBundle(hex) : undefined
      }))
    }
  }

  const installedWithStatus = async (cat: Catalog): Promise<InstalledSkill[]> => {
    return (await store.installed()).map((record) => {
      const p = cat.byBundle(record.bundle)
      return { ...record, path: join(store.installedDir, record.name), status: p != null ? statusOf(p) : 'unknown' }
    })
  }

  /** Fetches a bundle from the team: DHT providers first, then connected members (the author first). */
  const fetchBundle = async (p: Publication, signal: AbortSignal): Promise<{ bundle: SkillBundle, source: string }> => {
    const teams = p.announcements.map((a) => a.teamId)
    const teamOf = (peer: PeerId): string | undefined => teams.find((teamId) => team.isMember(teamId, peer))
    const candidates = new Map<string, { peer: PeerId, teamId: string }>()
    const lookup = AbortSignal.any([signal, AbortSignal.timeout(providerLookupMs)])
    for (const peer of await findBundleProviders(mesh.libp2p, p.bundle, { signal: lookup, max: 8, logger })) {
      const teamId = teamOf(peer)
      if (teamId != null) candidates.set(peer.toString(), { peer, teamId })
    }
    const connected = mesh.libp2p.getPeers().sort((a, b) => (keyOfPeer(a) === p.authorKey ? 0 : 1) - (keyOfPeer(b) === p.authorKey ? 0 : 1))
    for (const peer of connected) {
      const teamId = teamOf(peer)
      if (teamId != null && !candidates.has(peer.toString())) candidates.set(peer.toString(), { peer, teamId })
    }
    const failures: string[] = []
    let refusal: PermagentError | undefined
    for (const { peer, teamId } of candidates.values()) {
      signal.throwIfAborted()
      let data: Uint8Array | undefined
      try {
        const result = await team.fetchSkillBundles(peer, teamId, [hexToBytes(p.bundle)], { signal, timeoutMs: fetchTimeoutMs })
        data = result.items[0]?.data
      } catch (err) {
        failures.push(`${peer.toString()}: ${(err as Error).message}`)
        continue
      }
      if (data == null) { failures.push(`${peer.toString()}: does not hold it`); continue }
      try {
        if (data.byteLength !== p.size) throw new SkillError('ERR_SKILL_TAMPERED', `the bundle is ${data.byteLength} bytes; its announcement says ${p.size}`)
        return { bundle: decodeBundle(data, p.bundle), source: peer.toString() }
      } catch (err) {
        if (!isPermagentError(err)) throw err
        refusal = err
        failures.push(`${peer.toString()} sent a bundle that failed verification: ${err.message}`)
      }
    }
    const what = `${p.name}@${p.version} (bundle ${p.bundle})`
    if (refusal != null) throw new SkillError(refusal.code, `refused ${what}: no peer served bytes that verify, and nothing was installed. ${failures.join('; ')}`)
    if (candidates.size === 0) throw new SkillError('ERR_SKILL_FETCH_FAILED', `cannot fetch ${what}: no team member holding it is reachable (no DHT provider, no connected member)`)
    throw new SkillError('ERR_SKILL_FETCH_FAILED', `cannot fetch ${what}: ${failures.join('; ')}`)
  }

  const obtainBundle = async (p: Publication, signal: AbortSignal): Promise<{ bundle: SkillBundle, source: string }> => {
    const local = await store.readBundle(p.bundle)
    if (local == null) return await fetchBundle(p, signal)
    try {
      return { bundle: decodeBundle(local, p.bundle), source: 'local' }
    } catch (err) {
      if (!isPermagentError(err)) throw err
      await store.quarantineBundle(p.bundle)
      throw new SkillError(err.code, `refused ${p.name}@${p.version}: the stored copy of bundle ${p.bundle} failed verification (${err.message}); nothing was installed, and the copy was moved aside to skills/bundles/${p.bundle}.pgsk.bad, so the next install fetches it from the team`)
    }
  }

  const installPublication = async (p: Publication, signal: AbortSignal): Promise<InstallResult> => {
    const member = p.announcements.some((a) => team.membership(a.teamId)?.isMemberAt(p.authorKey, a.hlc) === true)
    if (!member) throw new SkillError('ERR_SKILL_NOT_MEMBER', `refused ${p.name}@${p.version}: its author ${p.author} was not a member of the team when publishing it`)
    checkTrust(await loadPolicy(join(dir, 'policy.json'), options.policy), p.author, team.trustOf(p.author))
    const existing = await store.record(p.name)
    if (existing != null && existing.authorKey !== p.authorKey) {
      throw new SkillError('ERR_SKILL_CONFLICT', `${p.name} is installed from another author (${existing.author}); remove it first with \`permagent skill remove ${p.name}\``)
    }
    const path = join(store.installedDir, p.name)
    const base = { name: p.name, version: p.version, bundle: p.bundle, author: p.author, path, yanked: p.yank != null }
    if (existing?.bundle === p.bundle) return { ...base, source: 'local', alreadyInstalled: true }
    const { bundle, source } = await obtainBundle(p, signal)
    if (!await store.hasBundle(bundle.id)) await store.writeBundle(bundle)
    const teamId = p.announcements[0].teamId
    await store.install(bundle, { name: p.name, version: p.version, bundle: p.bundle, author: p.author, authorKey: p.authorKey, teamId, installedAt: new Date((options.now ?? Date.now)()).toISOString(), yanked: p.yank != null })
    provideInBackground(bundle.id)
    logger.info({ name: p.name, version: p.version, bundle: p.bundle, source }, 'skill installed')
    return { ...base, source, alreadyInstalled: false }
  }

  const installSignal = (signal?: AbortSignal): AbortSignal => AbortSignal.any([controller.signal, AbortSignal.timeout(installTimeoutMs), ...(signal != null ? [signal] : [])])

  const checkTeam = (teamId: string | undefined): void => {
    if (teamId != null && team.membership(teamId) == null) throw new UnknownTeamError(teamId)
  }

  return {
    dir,
    teamPort,
    async start () {
      if (running) return
      await store.init()
      activity = openActivityLog(join(dir, 'activity.db'), { now: options.now })
      controller = new AbortController()
      running = true
      // announce what this node holds, in the background (the DHT may have no peers yet)
      void (async () => {
        for (const id of await store.bundleIds()) await provide(id)
      })().catch((err) => { logger.debug({ err: (err as Error).message }, 'could not list held skill bundles') })
    },
    async stop () {
      if (!running) return
      running = false
      controller.abort()
      await chain
      activity?.close()
      activity = undefined
    },

    async publish (skillDir, teamId) {
      requireRunning()
      if (team.membership(teamId) == null) throw new UnknownTeamError(teamId)
      const bundle = await packSkill(skillDir, identity, options.limits)
      const { name, version } = bundle.manifest
      const own = catalog().publications.filter((p) => p.authorKey === ownKey && p.name === name && p.version === version)
      const other = own.find((p) => p.bundle !== bundle.id)
      if (other != null) {
        throw new SkillError('ERR_SKILL_EQUIVOCATION', `you already published ${name}@${version} as bundle ${other.bundle} with other contents; publishing different contents under one version is equivocation, and every node would refuse both: bump the version`)
      }
      await store.writeBundle(bundle)
      const earlier = own.find((p) => p.bundle === bundle.id)?.announcements.find((a) => a.teamId === teamId)
      const shardId = earlier?.shardId ?? (await team.publish(teamId, 'skill', encodePublish(bundle), 'team')).id
      provideInBackground(bundle.id)
      logger.info({ name, version, bundle: bundle.id, teamId }, 'skill published')
      return { name, version, bundle: bundle.id, size: bundle.bytes.byteLength, files: bundle.files.length, teamId, shardId, alreadyPublished: earlier != null }
    },

    async list (listOptions = {}) {
      checkTeam(listOptions.teamId)
      const cat = catalog()
      const installed = await installedWithStatus(cat)
      const installedBundles = new Set(installed.map((r) => r.bundle))
      return {
        skills: cat.inTeam(listOptions.teamId).map((p) => summaryOf(p, installedBundles)),
        equivocations: cat.equivocations().filter((e) => listOptions.teamId == null || cat.inTeam(listOptions.teamId).some((p) => e.bundles.includes(p.bundle))),
        installed
      }
    },

    async show (specText, showOptions = {}) {
      checkTeam(showOptions.teamId)
      const spec = parseSkillSpec(specText)
      const cat = catalog()
      const installed = await installedWithStatus(cat)
      const installedBundles = new Set(installed.map((r) => r.bundle))
      let all = cat.inTeam(showOptions.teamId).filter((p) => p.name === spec.name)
      if (showOptions.author != null) all = all.filter((p) => p.author.startsWith(showOptions.author?.toLowerCase() ?? ''))
      const matching = spec.version != null ? all.filter((p) => p.version === spec.version) : all
      const selected = [...matching].sort((a, b) => compareSemver(b.version, a.version))[0]
      if (selected == null) throw new SkillError('ERR_SKILL_NOT_FOUND', `no skill ${specText} is published${showOptions.teamId != null ? ` in team ${showOptions.teamId}` : ''}; see \`permagent skill list\``)
      const m = selected.manifest
      return {
        selected: { ...summaryOf(selected, installedBundles), entry: m.entry, inputs: m.inputs, files: m.files, authorKey: selected.authorKey },
        versions: all.map((p) => summaryOf(p, installedBundles)),
        installed: installed.find((r) => r.name === spec.name)
      }
    },

    async install (specText, installOptions = {}) {
      requireRunning()
      checkTeam(installOptions.teamId)
      const spec = parseSkillSpec(specText)
      return await exclusive(async () => {
        const p = catalog().resolve(spec, installOptions)
        return await installPublication(p, installSignal(installOptions.signal))
      })
    },

    async upgrade (name, upgradeOptions = {}) {
      requireRunning()
      return await exclusive(async () => {
        const records = name != null ? [await store.record(parseSkillSpec(name).name)] : await store.installed()
        if (records[0] == null) throw new SkillError('ERR_SKILL_NOT_INSTALLED', `${name ?? ''} is not installed; see \`permagent skill list\``)
        const cat = catalog()
        const results: UpgradeResult[] = []
        for (const record of records) {
          if (record == null) continue
          try {
            const newest = cat.resolve({ name: record.name }, { author: record.author })
            if (compareSemver(newest.version, record.version) <= 0) {
              results.push({ name: record.name, from: record.version, upgraded: false })
              continue
            }
            const installed = await installPublication(newest, installSignal(upgradeOptions.signal))
            results.push({ name: record.name, from: record.version, to: installed.version, upgraded: true })
          } catch (err) {
            if (!isPermagentError(err)) throw err
            results.push({ name: record.name, from: record.version, upgraded: false, error: { code: err.code, message: err.message } })
          }
        }
        return results
      })
    },

    async remove (name) {
      requireRunning()
      const skill = parseSkillSpec(name).name
      return await exclusive(async () => {
        const record = await store.record(skill)
        // the stored bundle stays, and is still served and provided
        if (record == null || !await store.remove(skill)) throw new SkillError('ERR_SKILL_NOT_INSTALLED', `${skill} is not installed`)
        logger.info({ name: skill, version: record.version }, 'skill removed')
        return { name: skill, version: record.version }
      })
    },

    async yank (specText, yankOptions = {}) {
      requireRunning()
      checkTeam(yankOptions.teamId)
      const spec = parseSkillSpec(specText)
      if (spec.version == null) throw new SkillError('ERR_INVALID_INPUT', 'yank names one version: NAME@VERSION')
      const published = catalog().inTeam(yankOptions.teamId).filter((p) => p.name === spec.name && p.version === spec.version)
      const mine = published.filter((p) => p.authorKey === ownKey)
      if (mine.length === 0) {
        if (published.length > 0) throw new SkillError('ERR_SKILL_NOT_AUTHOR', `${specText} was published by ${[...new Set(published.map((p) => p.author))].join(', ')}; only its author can yank it`)
        throw new SkillError('ERR_SKILL_NOT_FOUND', `you published no ${specText}${yankOptions.teamId != null ? ` in team ${yankOptions.teamId}` : ''}`)
      }
      const teams = new Set<string>()
      for (const p of mine) {
        if (p.yank != null) continue
        for (const a of p.announcements) {
          if (yankOptions.teamId != null && a.teamId !== yankOptions.teamId) continue
          await team.publish(a.teamId, 'skill', encodeYank({ name: p.name, version: p.version, bundle: p.bundle, ...(yankOptions.reason != null ? { reason: yankOptions.reason } : {}) }), 'team')
          teams.add(a.teamId)
        }
      }
      return { name: spec.name, version: spec.version, bundles: mine.map((p) => p.bundle), teams: [...teams] }
    },

    installed: async () => await installedWithStatus(catalog()),

    recordActivity (event) {
      requireRunning()
      checkActivityEvent(event)
      if (activity == null) throw new PermagentError('ERR_NOT_STARTED', 'the skills service is not running')
      return activity.record(event)
    },

    suggest (suggestOptions = {}) {
      requireRunning()
      if (activity == null) throw new PermagentError('ERR_NOT_STARTED', 'the skills service is not running')
      return activity.suggest(suggestOptions)
    }
  }
}
