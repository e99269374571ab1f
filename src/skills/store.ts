import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { z } from 'zod'
import { canonicalJson } from '../team/index.ts'
import { writeFileAtomic } from '../util/atomic-write.ts'
import { INSTALL_RECORD_FILE, MAX_BUNDLE_BYTES, type SkillBundle } from './bundle.ts'
import { SkillError } from './errors.ts'

/**
 * The skills directory of a node (<data-dir>/skills):
 *
 *   bundles/<bundle-id>.pgsk   bundles this node holds (published or installed), served to teams
 *   installed/<name>/          installed skills: the bundle's files and .permagent-skill.json
 *   activity.db                argument shapes of agent activity (see activity.ts)
 *   policy.json                the local trust policy (optional)
 *
 * An install is written into installed/.tmp-<name>-<random>/ and renamed into place; an upgrade
 * moves the old directory aside first (.old-<name>-<random>) and removes it after. start() undoes
 * whatever a crash left half-done, so a reader sees the old skill or the new one, whole.
 */

export interface InstallRecord {
  name: string
  version: string
  bundle: string
  author: string
  authorKey: string
  teamId: string
  installedAt: string
  yanked: boolean
}

const installRecordSchema = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/),
  version: z.string().max(64),
  bundle: z.string().regex(/^[0-9a-f]{64}$/),
  author: z.string().regex(/^[0-9a-f]{64}$/),
  authorKey: z.string().regex(/^[0-9a-f]{64}$/),
  teamId: z.string().regex(/^[0-9a-f]{64}$/),
  installedAt: z.string().max(64),
  yanked: z.boolean()
}).strict()

const BUNDLE_ID = /^[0-9a-f]{64}$/
const SKILL_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/

export interface SkillStore {
  readonly root: string
  readonly installedDir: string
  init: () => Promise<void>
  hasBundle: (id: string) => Promise<boolean>
  readBundle: (id: string) => Promise<Uint8Array | undefined>
  /** Writes verified bundle bytes (atomically). */
  writeBundle: (bundle: SkillBundle) => Promise<void>
  /** Moves a bundle that failed verification out of the served set (kept as <id>.pgsk.bad for inspection). */
  quarantineBundle: (id: string) => Promise<void>
  bundleIds: () => Promise<string[]>
  /** Writes a verified bundle's files as installed/<name>, replacing what was there, atomically. */
  install: (bundle: SkillBundle, record: InstallRecord) => Promise<string>
  remove: (name: string) => Promise<boolean>
  installed: () => Promise<InstallRecord[]>
  record: (name: string) => Promise<InstallRecord | undefined>
}

function bundlePath (root: string, id: string): string {
  if (!BUNDLE_ID.test(id)) throw new SkillError('ERR_INVALID_INPUT', 'a bundle id is 64 hex characters')
  return join(root, 'bundles', `${id}.pgsk`)
}

async function exists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

async function writeNewFile (path: string, data: Uint8Array, mode: number): Promise<void> {
  const handle = await open(path, 'wx', mode)
  try {
    await handle.writeFile(data)
    await handle.chmod(mode)
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export function openSkillStore (root: string): SkillStore {
  const installedDir = join(root, 'installed')
  const random = (): string => randomBytes(6).toString('hex')

  const readRecord = async (dir: string): Promise<InstallRecord | undefined> => {
    let text: string
    try {
      const file = join(dir, INSTALL_RECORD_FILE)
      if ((await stat(file)).size > 16 * 1024) return undefined
      text = await readFile(file, 'utf8')
    } catch {
      return undefined
    }
    try {
      const parsed = installRecordSchema.safeParse(JSON.parse(text))
      return parsed.success ? parsed.data : undefined
    } catch {
      return undefined
    }
  }

  return {
    root,
    installedDir,
    async init () {
      await mkdir(join(root, 'bundles'), { recursive: true, mode: 0o700 })
      await mkdir(installedDir, { recursive: true, mode: 0o755 })
      // finish or undo what a crash interrupted: temp dirs go, a moved-aside old version comes back
      // if its replacement never arrived
      for (const entry of await readdir(installedDir)) {
        const path = join(installedDir, entry)
        if (entry.startsWith('.tmp-')) {
          await rm(path, { recursive: true, force: true })
        } else if (entry.startsWith('.old-')) {
          const name = entry.slice('.old-'.length, entry.lastIndexOf('-'))
          if (SKILL_NAME.test(name) && !await exists(join(installedDir, name))) await rename(path, join(installedDir, name))
          else await rm(path, { recursive: true, force: true })
        }
      }
      for (const entry of await readdir(join(root, 'bundles'))) {
        if (entry.endsWith('.tmp')) await unlink(join(root, 'bundles', entry)).catch(() => {})
      }
    },
    hasBundle: async (id) => await exists(bundlePath(root, id)),
    async readBundle (id) {
      const path = bundlePath(root, id)
      try {
        const info = await stat(path)
        if (info.size > MAX_BUNDLE_BYTES) return undefined
        return new Uint8Array(await readFile(path))
      } catch {
        return undefined
      }
    },
    async writeBundle (bundle) {
      await writeFileAtomic(bundlePath(root, bundle.id), bundle.bytes, { mode: 0o600 })
    },
    async quarantineBundle (id) {
      const path = bundlePath(root, id)
      await rename(path, `${path}.bad`).catch(() => {})
    },
    async bundleIds () {
      return (await readdir(join(root, 'bundles'))).filter((e) => /^[0-9a-f]{64}\.pgsk$/.test(e)).map((e) => e.slice(0, 64))
    },
    async install (bundle, record) {
      const name = bundle.manifest.name
      const target = join(installedDir, name)
      const temp = join(installedDir, `.tmp-${name}-${random()}`)
      await mkdir(temp, { mode: 0o755 })
      try {
        const base = resolve(temp) + sep
        for (const { file, data } of bundle.files) {
          const path = resolve(temp, ...file.path.split('/'))
          // the manifest's paths were checked; this keeps a bug there from writing outside
          if (!path.startsWith(base)) throw new SkillError('ERR_SKILL_PATH', `${file.path} would be written outside the skill directory`)
          await mkdir(dirname(path), { recursive: true, mode: 0o755 })
          await writeNewFile(path, data, file.executable ? 0o755 : 0o644)
        }
        await writeNewFile(join(temp, INSTALL_RECORD_FILE), new TextEncoder().encode(canonicalJson(record) + '\n'), 0o644)
        if (await exists(target)) {
          const old = join(installedDir, `.old-${name}-${random()}`)
          await rename(target, old)
          await rename(temp, target)
          await rm(old, { recursive: true, force: true })
        } else {
          await rename(temp, target)
        }
        return target
      } catch (err) {
        await rm(temp, { recursive: true, force: true })
        throw err
      }
    },
    async remove (name) {
      if (!SKILL_NAME.test(name)) throw new SkillError('ERR_INVALID_INPUT', `"${name.slice(0, 80)}" is not a skill name`)
      const target = join(installedDir, name)
      if (!await exists(target)) return false
      const old = join(installedDir, `.old-${name}-${random()}`)
      await rename(target, old)
      await rm(old, { recursive: true, force: true })
      return true
    },
    async installed () {
      const out: InstallRecord[] = []
      for (const entry of (await readdir(installedDir)).sort()) {
        if (entry.startsWith('.') || !SKILL_NAME.test(entry)) continue
        const record = await readRecord(join(installedDir, entry))
        if (record != null && record.name === entry) out.push(record)
      }
      return out
    },
    async record (name) {
      if (!SKILL_NAME.test(name)) return undefined
      const record = await readRecord(join(installedDir, name))
      return record?.name === name ? record : undefined
    }
  }
}
