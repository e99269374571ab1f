import { readFile, stat } from 'node:fs/promises'
import { z } from 'zod'
import { SkillError } from './errors.ts'

/**
 * The local trust policy for installing skills, from the node options and
 * <data-dir>/skills/policy.json (read at every install, so edits apply at once):
 *
 *   { "deny": [brain ids], "allow": [brain ids], "minTrust": number }
 *
 * An author on `deny` is refused; with a non-empty `allow`, only those authors pass; and the
 * author's team trust weight (team.trust, default 1) must be at least `minTrust` (default: above 0,
 * so a weight of 0 distrusts an author).
 */
export interface SkillTrustPolicy {
  deny?: string[]
  allow?: string[]
  minTrust?: number
}

const brainId = z.string().regex(/^[0-9a-f]{64}$/, 'a brain id is 64 hex characters')
export const policySchema = z.object({
  deny: z.array(brainId).max(10_000).optional(),
  allow: z.array(brainId).max(10_000).optional(),
  minTrust: z.number().finite().optional()
}).strict()

const MAX_POLICY_BYTES = 1024 * 1024

export async function loadPolicy (file: string, base: SkillTrustPolicy = {}): Promise<SkillTrustPolicy> {
  let text: string
  try {
    if ((await stat(file)).size > MAX_POLICY_BYTES) throw new SkillError('ERR_INVALID_INPUT', `${file} is larger than ${MAX_POLICY_BYTES} bytes`)
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return base
    throw err
  }
  let parsed
  try {
    parsed = policySchema.safeParse(JSON.parse(text))
  } catch (err) {
    throw new SkillError('ERR_INVALID_INPUT', `${file} is not JSON: ${(err as Error).message}`)
  }
  if (!parsed.success) throw new SkillError('ERR_INVALID_INPUT', `${file}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return {
    deny: [...(base.deny ?? []), ...(parsed.data.deny ?? [])],
    allow: [...(base.allow ?? []), ...(parsed.data.allow ?? [])],
    minTrust: parsed.data.minTrust ?? base.minTrust
  }
}

/** Throws ERR_SKILL_UNTRUSTED when `author` does not pass the policy. */
export function checkTrust (policy: SkillTrustPolicy, author: string, trust: number): void {
  if (policy.deny?.includes(author) === true) throw new SkillError('ERR_SKILL_UNTRUSTED', `author ${author} is on the deny list of the local skill policy`)
  if (policy.allow != null && policy.allow.length > 0 && !policy.allow.includes(author)) throw new SkillError('ERR_SKILL_UNTRUSTED', `author ${author} is not on the allow list of the local skill policy`)
  const passes = policy.minTrust != null ? trust >= policy.minTrust : trust > 0
  if (!passes) throw new SkillError('ERR_SKILL_UNTRUSTED', `author ${author} has trust weight ${trust}, below what the local skill policy requires (${policy.minTrust != null ? `at least ${policy.minTrust}` : 'above 0'})`)
}
