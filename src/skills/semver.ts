import { SkillError } from './errors.ts'

/** semver 2.0.0 (https://semver.org), without build metadata; at most 64 characters. */
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$/
const MAX_VERSION_LENGTH = 64

export interface SemVer {
  major: string
  minor: string
  patch: string
  prerelease: string[]
}

/** Parses a version; throws ERR_SKILL_VERSION with the reason. */
export function parseSemver (version: string): SemVer {
  if (typeof version !== 'string' || version.length === 0) throw new SkillError('ERR_SKILL_VERSION', 'a skill version is required (semver, e.g. 1.0.0)')
  if (version.length > MAX_VERSION_LENGTH) throw new SkillError('ERR_SKILL_VERSION', `version is ${version.length} characters; the limit is ${MAX_VERSION_LENGTH}`)
  if (version.includes('+')) throw new SkillError('ERR_SKILL_VERSION', `version "${version}" has build metadata (+...); it is not allowed, since two bundles differing only in it would be one version`)
  const match = SEMVER.exec(version)
  if (match == null) throw new SkillError('ERR_SKILL_VERSION', `version "${version}" is not semver (MAJOR.MINOR.PATCH with an optional -prerelease, e.g. 1.4.0 or 2.0.0-rc.1)`)
  return { major: match[1], minor: match[2], patch: match[3], prerelease: match[4] != null ? match[4].split('.') : [] }
}

export function isSemver (version: string): boolean {
  try {
    parseSemver(version)
    return true
  } catch {
    return false
  }
}

/** Numeric identifiers have no leading zeros, so a longer one is larger. */
function compareNumeric (a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length
  return a < b ? -1 : a > b ? 1 : 0
}

/** Precedence as semver 2.0.0 §11: negative if a < b, 0 if equal, positive if a > b. */
export function compareSemver (a: string, b: string): number {
  const x = parseSemver(a)
  const y = parseSemver(b)
  for (const key of ['major', 'minor', 'patch'] as const) {
    const c = compareNumeric(x[key], y[key])
    if (c !== 0) return Math.sign(c)
  }
  if (x.prerelease.length === 0 || y.prerelease.length === 0) return Math.sign(y.prerelease.length - x.prerelease.length)
  for (let i = 0; i < Math.min(x.prerelease.length, y.prerelease.length); i++) {
    const p = x.prerelease[i]
    const q = y.prerelease[i]
    const pn = /^\d+$/.test(p)
    const qn = /^\d+$/.test(q)
    let c: number
    if (pn && qn) c = compareNumeric(p, q)
    else if (pn) c = -1
    else if (qn) c = 1
    else c = p < q ? -1 : p > q ? 1 : 0
    if (c !== 0) return Math.sign(c)
  }
  return Math.sign(x.prerelease.length - y.prerelease.length)
}
