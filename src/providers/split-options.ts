import { InvalidInputError } from '../util/index.ts'
import type { SplitVerifyRequest } from './types.ts'

/** Canary probes per hop when verification is on and nobody said how many (MeshModel's `canaries: true`). */
export const DEFAULT_CANARIES = 2
/** Most canary probes per hop a request may ask for (MeshModel's own limit). */
export const MAX_CANARIES = 64

/** Verification defaults of a mesh provider (config.json `providers.mesh.verify`). */
export interface VerifyDefaults {
  rate?: number
  canaries?: number
}

/**
 * The verification one request runs with: the request's own `verify` over the provider's
 * defaults. A rate alone brings the default canaries (the configured number, else 2) when it is
 * above 0; rate 0 without canaries turns verification off, so a request can opt out of a
 * configured default. Returns null when nothing is checked.
 */
export function requestVerification (defaults: VerifyDefaults | undefined, request: SplitVerifyRequest | undefined): { rate: number, canaries: number } | null {
  const rate = request !== undefined ? request.rate : defaults?.rate ?? 0
  if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1)) throw new InvalidInputError(`verify.rate is a fraction in 0..1, got ${String(rate)}`)
  const canaries = (request !== undefined ? request.canaries : undefined) ??
    (rate > 0 ? defaults?.canaries ?? DEFAULT_CANARIES : request === undefined ? defaults?.canaries ?? 0 : 0)
  if (!Number.isInteger(canaries) || canaries < 0 || canaries > MAX_CANARIES) throw new InvalidInputError(`verify.canaries is an integer in 0..${MAX_CANARIES}, got ${String(canaries)}`)
  return rate === 0 && canaries === 0 ? null : { rate, canaries }
}

/** True when a request itself asks for verification (a configured default does not count). */
export function asksVerification (request: SplitVerifyRequest | undefined): boolean {
  return request !== undefined && (request.rate > 0 || (request.canaries ?? 0) > 0)
}
