import { z } from 'zod'
import { canonicalJson, decodeCanonicalJson, encodeCanonicalJson, ShardRejectedError, type Shard } from '../team/index.ts'
import { bundleIdOf, bundleSizeOf, checkManifest, encodeManifest, verifyManifestSignature, type SkillBundle, type SkillManifest } from './bundle.ts'
import { isPermagentError } from '../util/errors.ts'

/**
 * What a skill shard (kind 'skill') carries, as canonical JSON:
 *
 * - publish: `{ type: "publish", bundle, size, manifest, signature }`: the signed manifest, the
 *   bundle id (SHA-256 of the manifest's canonical JSON) and the bundle's byte length.
 * - yank: `{ type: "yank", name, version, bundle, reason? }`: the author withdraws one of their
 *   bundles. The shard's signature is the author's; a yank by anyone else has no effect.
 */
export interface PublishAnnouncement {
  type: 'publish'
  bundle: string
  size: number
  manifest: SkillManifest
  signature: string
}

export interface YankAnnouncement {
  type: 'yank'
  name: string
  version: string
  bundle: string
  reason?: string
}

export type SkillAnnouncement = PublishAnnouncement | YankAnnouncement

export const MAX_YANK_REASON = 512

const HEX64 = z.string().regex(/^[0-9a-f]{64}$/)
const publishSchema = z.object({
  type: z.literal('publish'),
  bundle: HEX64,
  size: z.number().int().positive(),
  manifest: z.unknown(),
  signature: z.string().regex(/^[0-9a-f]{128}$/)
}).strict()
const yankSchema = z.object({
  type: z.literal('yank'),
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/),
  version: z.string().min(1).max(64),
  bundle: HEX64,
  reason: z.string().min(1).max(MAX_YANK_REASON).optional()
}).strict()

function bad (message: string): never {
  throw new ShardRejectedError('ERR_SHARD_BAD_BODY', `skill shard: ${message}`)
}

export function encodePublish (bundle: SkillBundle): Uint8Array {
  return encodeCanonicalJson({ type: 'publish', bundle: bundle.id, size: bundle.bytes.byteLength, manifest: bundle.manifest, signature: Buffer.from(bundle.signature).toString('hex') })
}

export function encodeYank (yank: Omit<YankAnnouncement, 'type'>): Uint8Array {
  return encodeCanonicalJson({ type: 'yank', ...yank })
}

/**
 * Parses and checks a skill shard's body (the team validator calls this for every skill shard):
 * schema, and for a publication the manifest, its signature by the shard's author, the bundle id
 * and the exact bundle size. Throws ShardRejectedError ERR_SHARD_BAD_BODY.
 */
export function parseAnnouncement (shard: Shard): SkillAnnouncement {
  let value: unknown
  try {
    value = decodeCanonicalJson(shard.body)
  } catch (err) {
    bad(`the body is not canonical JSON: ${(err as Error).message}`)
  }
  const type = (value as { type?: unknown } | null)?.type
  if (type === 'yank') {
    const parsed = yankSchema.safeParse(value)
    if (!parsed.success) bad(`a yank is { type, name, version, bundle, reason? }: ${parsed.error.issues[0]?.message ?? ''}`)
    return parsed.data
  }
  if (type !== 'publish') bad('type is "publish" or "yank"')
  const parsed = publishSchema.safeParse(value)
  if (!parsed.success) bad(`a publication is { type, bundle, size, manifest, signature }: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  let manifest: SkillManifest
  try {
    manifest = checkManifest(parsed.data.manifest)
  } catch (err) {
    if (isPermagentError(err)) bad(`${err.message} (${err.code})`)
    throw err
  }
  if (manifest.author !== shard.authorKey) bad(`the manifest's author ${manifest.author.slice(0, 16)}... did not sign this shard; a skill is announced by its author`)
  const manifestBytes = encodeManifest(manifest)
  if (canonicalJson(parsed.data.manifest) !== canonicalJson(manifest)) bad('the manifest holds unexpected fields')
  if (bundleIdOf(manifestBytes) !== parsed.data.bundle) bad('the bundle id is not the SHA-256 of the manifest')
  if (!verifyManifestSignature(manifest, manifestBytes, Buffer.from(parsed.data.signature, 'hex'))) bad('the manifest signature does not verify')
  if (bundleSizeOf(manifest, manifestBytes) !== parsed.data.size) bad(`the bundle size ${parsed.data.size} does not match its manifest`)
  return { type: 'publish', bundle: parsed.data.bundle, size: parsed.data.size, manifest, signature: parsed.data.signature }
}
