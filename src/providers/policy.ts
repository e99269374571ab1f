import { InvalidInputError } from '../util/index.ts'
import { INFERENCE_POLICIES, type InferencePolicy, type PrivacyClass } from './types.ts'

/** The privacy classes each policy allows, most private first (the order the resolver tries them). */
const ALLOWED: Record<InferencePolicy, readonly PrivacyClass[]> = {
  'local-only': ['local'],
  'team-mesh': ['local', 'team-mesh'],
  mesh: ['local', 'team-mesh', 'mesh'],
  'cloud-allowed': ['local', 'team-mesh', 'mesh', 'cloud']
}

export function allowedPrivacy (policy: InferencePolicy): readonly PrivacyClass[] {
  return ALLOWED[policy]
}

export function policyAllows (policy: InferencePolicy, privacy: PrivacyClass): boolean {
  return ALLOWED[policy].includes(privacy)
}

/** The weakest policy that allows a privacy class (what to ask for in an error message). */
export function policyFor (privacy: PrivacyClass): InferencePolicy {
  return INFERENCE_POLICIES.find((p) => ALLOWED[p].includes(privacy)) as InferencePolicy
}

export function parsePolicy (value: string): InferencePolicy {
  if (!(INFERENCE_POLICIES as readonly string[]).includes(value)) throw new InvalidInputError(`policy must be one of ${INFERENCE_POLICIES.join(', ')}; got "${value.slice(0, 64)}"`)
  return value as InferencePolicy
}

const TEAM_ID = /^[0-9a-f]{64}$/

export function parseTeamId (value: string): string {
  if (!TEAM_ID.test(value)) throw new InvalidInputError('a team id is 64 lowercase hex characters (see `permagent team list`)')
  return value
}
