import { createHash } from 'node:crypto'
import type { HlcTime, Shard } from '../team/index.ts'
import { compareHlc } from '../team/index.ts'
import type { PublishAnnouncement, SkillAnnouncement, YankAnnouncement } from './announce.ts'
import type { SkillManifest } from './bundle.ts'
import { SkillError } from './errors.ts'
import { compareSemver, isSemver } from './semver.ts'

/** One bundle as the teams announce it: one entry per (author, bundle), with every team that carries it. */
export interface Publication {
  name: string
  version: string
  bundle: string
  size: number
  manifest: SkillManifest
  signature: string
  /** The author's brain id and public key (hex). */
  author: string
  authorKey: string
  /** Each team's announcing shard (the earliest, if announced twice). */
  announcements: Array<{ teamId: string, shardId: string, hlc: HlcTime }>
  /** The author withdrew this bundle (the earliest yank). */
  yank?: { shardId: string, teamId: string, reason?: string, at: number }
  /** Other bundles the same author published under the same name@version: all of them are refused. */
  conflicts: string[]
}

export type PublicationStatus = 'available' | 'yanked' | 'equivocated'

export function statusOf (p: Publication): PublicationStatus {
  if (p.conflicts.length > 0) return 'equivocated'
  if (p.yank != null) return 'yanked'
  return 'available'
}

export interface AnnouncedShard {
  teamId: string
  shard: Shard
  announcement: SkillAnnouncement
}

function brainIdOfKey (key: string): string {
  return createHash('sha256').update(Buffer.from(key, 'hex')).digest('hex')
}

/**
 * The skills the teams announce, computed from their skill shards (a view: nothing is stored
 * besides the shards). Equivocation is per author across every team this node is in: two bundle
 * ids under one (author, name, version) mark all of them. A yank applies to the author's own
 * bundle only; a yank by anyone else has no effect.
 */
export class Catalog {
  readonly publications: Publication[]

  constructor (shards: AnnouncedShard[]) {
    const byBundle = new Map<string, Publication>()
    const yanks: Array<{ teamId: string, shard: Shard, yank: YankAnnouncement }> = []
    const ordered = [...shards].sort((a, b) => compareHlc(a.shard.hlc, b.shard.hlc) || (a.shard.id < b.shard.id ? -1 : a.shard.id > b.shard.id ? 1 : 0))
    for (const { teamId, shard, announcement } of ordered) {
      if (announcement.type === 'yank') { yanks.push({ teamId, shard, yank: announcement }); continue }
      const key = `${shard.authorKey}/${announcement.bundle}`
      let publication = byBundle.get(key)
      if (publication == null) {
        publication = fromAnnouncement(announcement, shard)
        byBundle.set(key, publication)
      }
      if (!publication.announcements.some((a) => a.teamId === teamId)) publication.announcements.push({ teamId, shardId: shard.id, hlc: shard.hlc })
    }
    for (const { teamId, shard, yank } of yanks) {
      const publication = byBundle.get(`${shard.authorKey}/${yank.bundle}`)
      if (publication == null || publication.name !== yank.name || publication.version !== yank.version) continue
      publication.yank ??= { shardId: shard.id, teamId, reason: yank.reason, at: shard.hlc.wallMs }
    }
    const byVersion = new Map<string, Publication[]>()
    for (const p of byBundle.values()) {
      const key = `${p.authorKey}/${p.name}@${p.version}`
      byVersion.set(key, [...(byVersion.get(key) ?? []), p])
    }
    for (const group of byVersion.values()) {
      if (group.length < 2) continue
      for (const p of group) p.conflicts = group.filter((o) => o !== p).map((o) => o.bundle).sort()
    }
    this.publications = [...byBundle.values()].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : compareSemver(b.version, a.version) || (a.author < b.author ? -1 : 1))
  }

  inTeam (teamId: string | undefined): Publication[] {
    return teamId == null ? this.publications : this.publications.filter((p) => p.announcements.some((a) => a.teamId === teamId))
  }

  byBundle (bundle: string, teamId?: string): Publication | undefined {
    return this.inTeam(teamId).find((p) => p.bundle === bundle)
  }

  /** Equivocations: (author, name@version) with more than one bundle. */
  equivocations (): Array<{ author: string, name: string, version: string, bundles: string[] }> {
    const seen = new Map<string, { author: string, name: string, version: string, bundles: string[] }>()
    for (const p of this.publications) {
      if (p.conflicts.length === 0) continue
      const key = `${p.authorKey}/${p.name}@${p.version}`
      if (!seen.has(key)) seen.set(key, { author: p.author, name: p.name, version: p.version, bundles: [p.bundle, ...p.conflicts].sort() })
    }
    return [...seen.values()]
  }

  /**
   * Picks the publication `NAME[@VERSION]` names: in one team if given, by one author if given
   * (brain id or a prefix of at least 8 characters). Without a version, the highest that is
   * available (neither yanked, unless allowYanked, nor equivocated). Throws ERR_SKILL_NOT_FOUND,
   * ERR_SKILL_AMBIGUOUS, ERR_SKILL_YANKED or ERR_SKILL_EQUIVOCATION.
   */
  resolve (spec: SkillSpec, options: { teamId?: string, author?: string, allowYanked?: boolean } = {}): Publication {
    let candidates = this.inTeam(options.teamId).filter((p) => p.name === spec.name)
    const where = options.teamId != null ? ` in team ${options.teamId}` : ''
    if (candidates.length === 0) throw new SkillError('ERR_SKILL_NOT_FOUND', `no skill named ${spec.name} is published${where}; see \`permagent skill list\``)
    if (options.author != null) {
      const prefix = options.author.toLowerCase()
      candidates = candidates.filter((p) => p.author.startsWith(prefix))
      if (prefix.length < 8 || candidates.length === 0) throw new SkillError('ERR_SKILL_NOT_FOUND', `no skill ${spec.name} by an author whose brain id starts with ${options.author} (give at least 8 characters)${where}`)
    }
    if (spec.version != null) {
      const exact = candidates.filter((p) => p.version === spec.version)
      if (exact.length === 0) throw new SkillError('ERR_SKILL_NOT_FOUND', `${spec.name} has no version ${spec.version}${where} (published: ${[...new Set(candidates.map((p) => p.version))].join(', ')})`)
      candidates = exact
    }
    const authors = [...new Set(candidates.map((p) => p.author))]
    if (authors.length > 1) throw new SkillError('ERR_SKILL_AMBIGUOUS', `${authors.length} authors publish a skill named ${spec.name}${spec.version != null ? `@${spec.version}` : ''}: ${authors.join(', ')}; say which with --author`)
    if (spec.version != null) return checkUsable(candidates[0], options.allowYanked === true)
    const usable = candidates.filter((p) => statusOf(p) === 'available' || (options.allowYanked === true && statusOf(p) === 'yanked'))
    if (usable.length === 0) {
      if (new Set(candidates.map((p) => p.version)).size === 1) return checkUsable(candidates[0], options.allowYanked === true)
      // the code is the newest version's reason; the message names every version's
      const code = statusOf(candidates[0]) === 'equivocated' ? 'ERR_SKILL_EQUIVOCATION' : 'ERR_SKILL_YANKED'
      throw new SkillError(code, `no version of ${spec.name} can be installed: ${candidates.map((p) => `${p.version} ${statusOf(p)}`).join(', ')}`)
    }
    return usable.sort((a, b) => compareSemver(b.version, a.version))[0]
  }
}

/** Throws for an equivocated or (unless allowed) yanked publication. */
export function checkUsable (p: Publication, allowYanked: boolean): Publication {
  if (p.conflicts.length > 0) {
    throw new SkillError('ERR_SKILL_EQUIVOCATION', `equivocation: author ${p.author} published ${p.conflicts.length + 1} different bundles as ${p.name}@${p.version} (${[p.bundle, ...p.conflicts].sort().join(', ')}); all of them are refused`)
  }
  if (p.yank != null && !allowYanked) {
    throw new SkillError('ERR_SKILL_YANKED', `${p.name}@${p.version} was yanked by its author${p.yank.reason != null ? ` (${p.yank.reason})` : ''}; install another version, or pass --allow-yanked to install it anyway`)
  }
  return p
}

function fromAnnouncement (a: PublishAnnouncement, shard: Shard): Publication {
  return {
    name: a.manifest.name,
    version: a.manifest.version,
    bundle: a.bundle,
    size: a.size,
    manifest: a.manifest,
    signature: a.signature,
    author: brainIdOfKey(shard.authorKey),
    authorKey: shard.authorKey,
    announcements: [],
    conflicts: []
  }
}

export interface SkillSpec {
  name: string
  version?: string
}

/** Parses `NAME` or `NAME@VERSION`; throws ERR_SKILL_NOT_FOUND for a malformed name, ERR_SKILL_VERSION for a bad version. */
export function parseSkillSpec (text: string): SkillSpec {
  const at = text.indexOf('@')
  const name = at < 0 ? text : text.slice(0, at)
  const version = at < 0 ? undefined : text.slice(at + 1)
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(name)) throw new SkillError('ERR_INVALID_INPUT', `"${text.slice(0, 80)}" is not a skill name (NAME or NAME@VERSION; names are a-z, 0-9 and -)`)
  if (version != null && !isSemver(version)) throw new SkillError('ERR_SKILL_VERSION', `"${version.slice(0, 64)}" is not a semver version (e.g. 1.2.0)`)
  return version != null ? { name, version } : { name }
}
