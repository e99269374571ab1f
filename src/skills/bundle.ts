import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { lstat, open, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { SIGNATURE_CONTEXTS, verifySignature, type Identity } from '../identity/index.ts'
import { canonicalJson, decodeCanonicalJson } from '../team/index.ts'
import { SkillError } from './errors.ts'
import { INPUT_TYPES, MAX_DESCRIPTION, MAX_INPUT_DESCRIPTION, MAX_INPUTS, parseSkillMd, SKILL_FILE, type SkillFrontMatter, type SkillInput } from './front-matter.ts'
import { parseSemver } from './semver.ts'

/**
 * A skill bundle: the files of a skill directory, a manifest listing them (sorted paths, size,
 * SHA-256, executable bit) with the SKILL.md front matter and the author's key, the author's
 * signature over the manifest, and the file bytes. The bundle id is the SHA-256 of the manifest's
 * canonical JSON. Byte format (docs/skills.md):
 *
 *   "PGSKILL" 0x01 | u32be manifest length M | manifest (M bytes) | signature (64) | files, in manifest order
 */

export const MANIFEST_FORMAT = 'permagent-skill/1'
export const BUNDLE_MAGIC = new Uint8Array([0x50, 0x47, 0x53, 0x4b, 0x49, 0x4c, 0x4c, 0x01])
const HEADER_BYTES = BUNDLE_MAGIC.byteLength + 4
const SIGNATURE_BYTES = 64
/** The manifest travels in a skill shard (64 KiB), so it is bounded well below that. */
export const MAX_MANIFEST_BYTES = 48 * 1024
/** The install record inside an installed skill's directory; no bundle may carry this name. */
export const INSTALL_RECORD_FILE = '.permagent-skill.json'

export interface SkillLimits {
  /** One file (default 1 MiB). */
  maxFileBytes: number
  /** All files together (default 2 MiB). */
  maxTotalBytes: number
  /** Number of files (default 256). */
  maxFiles: number
  /** A path in UTF-8 bytes (default 255). */
  maxPathBytes: number
  /** Directory levels (default 16). */
  maxDepth: number
}

/** Protocol limits: what any node accepts from a peer. A node may pack with lower ones, never higher. */
export const SKILL_LIMITS: Readonly<SkillLimits> = Object.freeze({
  maxFileBytes: 1024 * 1024,
  maxTotalBytes: 2 * 1024 * 1024,
  maxFiles: 256,
  maxPathBytes: 255,
  maxDepth: 16
})

/** The largest bundle any node accepts: header, manifest, signature and files. */
export const MAX_BUNDLE_BYTES = HEADER_BYTES + MAX_MANIFEST_BYTES + SIGNATURE_BYTES + SKILL_LIMITS.maxTotalBytes

export interface ManifestFile {
  path: string
  size: number
  sha256: string
  executable: boolean
}

export interface SkillManifest extends SkillFrontMatter {
  format: typeof MANIFEST_FORMAT
  files: ManifestFile[]
  /** The author's Ed25519 public key, hex. */
  author: string
}

export interface SkillBundle {
  /** Hex SHA-256 of manifestBytes. */
  id: string
  manifest: SkillManifest
  manifestBytes: Uint8Array
  signature: Uint8Array
  /** The whole bundle, as stored and served. */
  bytes: Uint8Array
  files: Array<{ file: ManifestFile, data: Uint8Array }>
}

const HEX64 = /^[0-9a-f]{64}$/

export function sha256Hex (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

export function resolveLimits (limits: Partial<SkillLimits> = {}): SkillLimits {
  const out = { ...SKILL_LIMITS, ...limits }
  for (const key of Object.keys(SKILL_LIMITS) as Array<keyof SkillLimits>) {
    if (!Number.isInteger(out[key]) || out[key] < 1 || out[key] > SKILL_LIMITS[key]) throw new SkillError('ERR_SKILL_TOO_LARGE', `skill limit ${key} must be a whole number from 1 to ${SKILL_LIMITS[key]}`)
  }
  return out
}

const utf8 = new TextEncoder()

function compareBytes (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/**
 * A path inside a bundle: relative, '/'-separated, no empty, `.` or `..` segments, no backslash,
 * drive prefix, control character or NUL, at most maxPathBytes and maxDepth. Throws ERR_SKILL_PATH.
 */
export function checkBundlePath (path: string, limits: SkillLimits = SKILL_LIMITS): string {
  if (typeof path !== 'string' || path.length === 0) throw new SkillError('ERR_SKILL_PATH', 'a bundle path is a non-empty string')
  const shown = JSON.stringify(path.slice(0, 120))
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) throw new SkillError('ERR_SKILL_PATH', `path ${shown} is absolute; bundle paths are relative to the skill directory`)
  if (path.includes('\\')) throw new SkillError('ERR_SKILL_PATH', `path ${shown} holds a backslash; bundle paths use "/"`)
  if (/[\u0000-\u001f\u007f]/.test(path)) throw new SkillError('ERR_SKILL_PATH', `path ${shown} holds a control character`)
  if (utf8.encode(path).byteLength > limits.maxPathBytes) throw new SkillError('ERR_SKILL_PATH', `path ${shown} is longer than ${limits.maxPathBytes} bytes`)
  const segments = path.split('/')
  if (segments.some((s) => s === '..')) throw new SkillError('ERR_SKILL_PATH', `path ${shown} escapes the bundle ("..")`)
  if (segments.some((s) => s === '' || s === '.')) throw new SkillError('ERR_SKILL_PATH', `path ${shown} has an empty or "." segment`)
  if (segments.length > limits.maxDepth) throw new SkillError('ERR_SKILL_PATH', `path ${shown} is deeper than ${limits.maxDepth} levels`)
  if (path === INSTALL_RECORD_FILE) throw new SkillError('ERR_SKILL_PATH', `${INSTALL_RECORD_FILE} is reserved for the install record`)
  return path
}

const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/),
  version: z.string().max(64),
  description: z.string().min(1).max(MAX_DESCRIPTION),
  runner: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,31}$/),
  entry: z.string().min(1).max(255),
  inputs: z.array(z.object({
    name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/),
    type: z.enum(INPUT_TYPES),
    required: z.boolean(),
    description: z.string().min(1).max(MAX_INPUT_DESCRIPTION).optional()
  }).strict()).max(MAX_INPUTS),
  files: z.array(z.object({
    path: z.string().min(1).max(1024),
    size: z.number().int().nonnegative(),
    sha256: z.string().regex(HEX64),
    executable: z.boolean()
  }).strict()).min(1),
  author: z.string().regex(HEX64)
}).strict()

/**
 * Checks a manifest from outside: schema, semver, every path, sorted unique paths with no file
 * under another file and no case-only collisions, the limits, SKILL.md and the entry present.
 */
export function checkManifest (value: unknown): SkillManifest {
  const parsed = manifestSchema.safeParse(value)
  if (!parsed.success) throw new SkillError('ERR_SKILL_BUNDLE', `the skill manifest is malformed: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  const manifest = parsed.data as SkillManifest
  parseSemver(manifest.version)
  if (manifest.files.length > SKILL_LIMITS.maxFiles) throw new SkillError('ERR_SKILL_TOO_LARGE', `the bundle lists ${manifest.files.length} files; the limit is ${SKILL_LIMITS.maxFiles}`)
  let total = 0
  const folded = new Set<string>()
  const paths = new Set<string>()
  manifest.files.forEach((file, i) => {
    checkBundlePath(file.path)
    if (i > 0 && compareBytes(manifest.files[i - 1].path, file.path) >= 0) throw new SkillError('ERR_SKILL_BUNDLE', 'the manifest\'s files are not sorted by path (UTF-8 bytes) and unique')
    if (file.size > SKILL_LIMITS.maxFileBytes) throw new SkillError('ERR_SKILL_TOO_LARGE', `file ${file.path} is ${file.size} bytes; the limit is ${SKILL_LIMITS.maxFileBytes}`)
    total += file.size
    const key = file.path.normalize('NFC').toLowerCase()
    if (folded.has(key)) throw new SkillError('ERR_SKILL_PATH', `paths differing only in case or Unicode form collide: ${file.path}`)
    folded.add(key)
    paths.add(file.path)
  })
  if (total > SKILL_LIMITS.maxTotalBytes) throw new SkillError('ERR_SKILL_TOO_LARGE', `the bundle's files are ${total} bytes; the limit is ${SKILL_LIMITS.maxTotalBytes}`)
  for (const path of paths) {
    const segments = path.split('/')
    for (let i = 1; i < segments.length; i++) {
      if (paths.has(segments.slice(0, i).join('/'))) throw new SkillError('ERR_SKILL_PATH', `${path} lies under ${segments.slice(0, i).join('/')}, which is a file`)
    }
  }
  if (!paths.has(SKILL_FILE)) throw new SkillError('ERR_SKILL_FRONT_MATTER', `the bundle has no ${SKILL_FILE}`)
  checkBundlePath(manifest.entry)
  if (!paths.has(manifest.entry)) throw new SkillError('ERR_SKILL_BUNDLE', `the entry ${manifest.entry} is not a file of the bundle`)
  return manifest
}

export function encodeManifest (manifest: SkillManifest): Uint8Array {
  return utf8.encode(canonicalJson(manifest))
}

/** The exact byte length of a bundle with this manifest. */
export function bundleSizeOf (manifest: SkillManifest, manifestBytes: Uint8Array): number {
  return HEADER_BYTES + manifestBytes.byteLength + SIGNATURE_BYTES + manifest.files.reduce((n, f) => n + f.size, 0)
}

export function bundleIdOf (manifestBytes: Uint8Array): string {
  return sha256Hex(manifestBytes)
}

export function verifyManifestSignature (manifest: SkillManifest, manifestBytes: Uint8Array, signature: Uint8Array): boolean {
  return signature.byteLength === SIGNATURE_BYTES && verifySignature(Buffer.from(manifest.author, 'hex'), SIGNATURE_CONTEXTS.skillManifest, manifestBytes, signature)
}

function sameFrontMatter (manifest: SkillManifest, front: SkillFrontMatter): boolean {
  const pick = (f: SkillFrontMatter): string => canonicalJson({ name: f.name, version: f.version, description: f.description, runner: f.runner, entry: f.entry, inputs: f.inputs })
  return pick(manifest) === pick(front)
}

/** Bundle bytes from a manifest, its signature and the file contents in manifest order. */
export function assembleBundle (manifestBytes: Uint8Array, signature: Uint8Array, contents: Uint8Array[]): Uint8Array {
  const size = HEADER_BYTES + manifestBytes.byteLength + SIGNATURE_BYTES + contents.reduce((n, c) => n + c.byteLength, 0)
  const out = new Uint8Array(size)
  out.set(BUNDLE_MAGIC, 0)
  new DataView(out.buffer).setUint32(BUNDLE_MAGIC.byteLength, manifestBytes.byteLength)
  let offset = HEADER_BYTES
  out.set(manifestBytes, offset); offset += manifestBytes.byteLength
  out.set(signature, offset); offset += SIGNATURE_BYTES
  for (const c of contents) { out.set(c, offset); offset += c.byteLength }
  return out
}

/**
 * Reads a bundle from its bytes and verifies all of it: format, manifest, id (when expected),
 * the author's signature, the length, every file's SHA-256, and that SKILL.md's front matter says
 * what the manifest says. Throws SkillError (ERR_SKILL_BUNDLE, ERR_SKILL_TAMPERED, ...).
 */
export function decodeBundle (bytes: Uint8Array, expectedId?: string): SkillBundle {
  if (bytes.byteLength > MAX_BUNDLE_BYTES) throw new SkillError('ERR_SKILL_TOO_LARGE', `the bundle is ${bytes.byteLength} bytes; the limit is ${MAX_BUNDLE_BYTES}`)
  if (bytes.byteLength < HEADER_BYTES + SIGNATURE_BYTES || Buffer.compare(bytes.subarray(0, BUNDLE_MAGIC.byteLength), BUNDLE_MAGIC) !== 0) {
    throw new SkillError('ERR_SKILL_BUNDLE', 'not a skill bundle (bad magic or too short)')
  }
  const manifestLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(BUNDLE_MAGIC.byteLength)
  if (manifestLength > MAX_MANIFEST_BYTES) throw new SkillError('ERR_SKILL_TOO_LARGE', `the manifest is ${manifestLength} bytes; the limit is ${MAX_MANIFEST_BYTES}`)
  const filesStart = HEADER_BYTES + manifestLength + SIGNATURE_BYTES
  if (bytes.byteLength < filesStart) throw new SkillError('ERR_SKILL_BUNDLE', 'the bundle ends inside its manifest or signature')
  const manifestBytes = bytes.subarray(HEADER_BYTES, HEADER_BYTES + manifestLength)
  const id = bundleIdOf(manifestBytes)
  if (expectedId != null && id !== expectedId) throw new SkillError('ERR_SKILL_TAMPERED', `the bundle's manifest hashes to ${id}, not the announced bundle id ${expectedId}`)
  let value: unknown
  try {
    value = decodeCanonicalJson(manifestBytes)
  } catch (err) {
    throw new SkillError('ERR_SKILL_BUNDLE', `the manifest is not canonical JSON: ${(err as Error).message}`)
  }
  const manifest = checkManifest(value)
  const signature = bytes.subarray(HEADER_BYTES + manifestLength, filesStart)
  if (!verifyManifestSignature(manifest, manifestBytes, signature)) throw new SkillError('ERR_SKILL_BAD_SIGNATURE', `the signature of ${manifest.name}@${manifest.version} does not verify with its author's key`)
  const expectedLength = bundleSizeOf(manifest, manifestBytes)
  if (bytes.byteLength !== expectedLength) throw new SkillError('ERR_SKILL_TAMPERED', `the bundle is ${bytes.byteLength} bytes; its manifest says ${expectedLength}`)
  const files: SkillBundle['files'] = []
  let offset = filesStart
  for (const file of manifest.files) {
    const data = bytes.subarray(offset, offset + file.size)
    offset += file.size
    if (sha256Hex(data) !== file.sha256) throw new SkillError('ERR_SKILL_TAMPERED', `file ${file.path} of ${manifest.name}@${manifest.version} does not match its SHA-256 in the signed manifest`)
    files.push({ file, data })
  }
  const skillMd = files.find((f) => f.file.path === SKILL_FILE)
  if (skillMd == null || !sameFrontMatter(manifest, parseSkillMd(skillMd.data))) throw new SkillError('ERR_SKILL_BUNDLE', `the manifest and ${SKILL_FILE}'s front matter disagree`)
  return { id, manifest, manifestBytes, signature, bytes, files }
}

interface WalkedFile { path: string, absolute: string }

async function walk (root: string, limits: SkillLimits): Promise<WalkedFile[]> {
  const out: WalkedFile[] = []
  const visit = async (relative: string, depth: number): Promise<void> => {
    const names = await readdir(join(root, relative))
    for (const name of names) {
      const path = relative === '' ? name : `${relative}/${name}`
      const absolute = join(root, path)
      const info = await lstat(absolute)
      if (info.isSymbolicLink()) throw new SkillError('ERR_SKILL_PATH', `${path} is a symbolic link; a skill bundle holds regular files only`)
      checkBundlePath(path, limits)
      if (info.isDirectory()) {
        if (depth + 1 >= limits.maxDepth) throw new SkillError('ERR_SKILL_PATH', `${path} is deeper than ${limits.maxDepth} levels`)
        await visit(path, depth + 1)
      } else if (info.isFile()) {
        if (out.length >= limits.maxFiles) throw new SkillError('ERR_SKILL_TOO_LARGE', `the skill has more than ${limits.maxFiles} files`)
        out.push({ path, absolute })
      } else {
        throw new SkillError('ERR_SKILL_PATH', `${path} is not a regular file or directory (a socket, FIFO or device); a skill bundle holds regular files only`)
      }
    }
  }
  await visit('', 0)
  return out
}

/** Reads a regular file without following a symlink swapped in after the walk, within a size limit. */
async function readRegular (absolute: string, path: string, limit: number): Promise<{ data: Uint8Array, executable: boolean }> {
  let handle
  try {
    handle = await open(absolute, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new SkillError('ERR_SKILL_PATH', `${path} is a symbolic link; a skill bundle holds regular files only`)
    throw err
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw new SkillError('ERR_SKILL_PATH', `${path} is not a regular file`)
    if (info.size > limit) throw new SkillError('ERR_SKILL_TOO_LARGE', `file ${path} is ${info.size} bytes; the limit is ${limit}`)
    const data = new Uint8Array(info.size)
    let read = 0
    while (read < data.byteLength) {
      const { bytesRead } = await handle.read(data, read, data.byteLength - read, read)
      if (bytesRead === 0) break
      read += bytesRead
    }
    if (read !== info.size) throw new SkillError('ERR_SKILL_BUNDLE', `file ${path} changed while it was read`)
    return { data, executable: (info.mode & 0o111) !== 0 }
  } finally {
    await handle.close()
  }
}

/**
 * Packs a skill directory into a signed bundle. Deterministic: the same files and author give the
 * same manifest, bundle id and bytes. Refuses symlinks, special files, unsafe paths, a missing or
 * invalid SKILL.md, and anything over the limits.
 */
export async function packSkill (dir: string, identity: Identity, limitOverrides: Partial<SkillLimits> = {}): Promise<SkillBundle> {
  const limits = resolveLimits(limitOverrides)
  let info
  try {
    info = await stat(dir)
  } catch (err) {
    throw new SkillError('ERR_SKILL_FRONT_MATTER', `cannot read the skill directory ${dir}: ${(err as Error).message}`)
  }
  if (!info.isDirectory()) throw new SkillError('ERR_SKILL_FRONT_MATTER', `${dir} is not a directory; a skill is a directory with a ${SKILL_FILE}`)
  const walked = (await walk(dir, limits)).sort((a, b) => compareBytes(a.path, b.path))
  if (!walked.some((f) => f.path === SKILL_FILE)) throw new SkillError('ERR_SKILL_FRONT_MATTER', `${dir} has no ${SKILL_FILE}; a skill is a directory with a ${SKILL_FILE} whose front matter names it`)
  const contents: Uint8Array[] = []
  const files: ManifestFile[] = []
  let total = 0
  for (const { path, absolute } of walked) {
    const { data, executable } = await readRegular(absolute, path, limits.maxFileBytes)
    total += data.byteLength
    if (total > limits.maxTotalBytes) throw new SkillError('ERR_SKILL_TOO_LARGE', `the skill's files are over ${limits.maxTotalBytes} bytes together (the bundle limit)`)
    contents.push(data)
    files.push({ path, size: data.byteLength, sha256: sha256Hex(data), executable })
  }
  const front = parseSkillMd(contents[files.findIndex((f) => f.path === SKILL_FILE)])
  checkBundlePath(front.entry, limits)
  if (!files.some((f) => f.path === front.entry)) throw new SkillError('ERR_SKILL_FRONT_MATTER', `${SKILL_FILE}: entry ${front.entry} is not a file of the skill directory`)
  const manifest: SkillManifest = { format: MANIFEST_FORMAT, ...front, inputs: front.inputs.map((i): SkillInput => ({ ...i })), files, author: Buffer.from(identity.publicKey).toString('hex') }
  checkManifest(JSON.parse(canonicalJson(manifest)))
  const manifestBytes = encodeManifest(manifest)
  if (manifestBytes.byteLength > MAX_MANIFEST_BYTES) throw new SkillError('ERR_SKILL_TOO_LARGE', `the manifest would be ${manifestBytes.byteLength} bytes; the limit is ${MAX_MANIFEST_BYTES} (fewer files or shorter paths)`)
  const signature = identity.sign(SIGNATURE_CONTEXTS.skillManifest, manifestBytes)
  return decodeBundle(assembleBundle(manifestBytes, signature, contents))
}
