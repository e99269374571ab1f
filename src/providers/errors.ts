import { PermagentError } from '../util/index.ts'

/** Stable codes of the provider layer (docs/split-inference.md, "Providers and privacy"). */
export const PROVIDER_ERRORS = {
  /** No provider the policy allows can serve the model; the message names what was missing. */
  noProvider: 'ERR_NO_PROVIDER',
  /** No provider the policy allows knows the model at all. */
  modelNotFound: 'ERR_MODEL_NOT_FOUND',
  /** The request pinned a provider (e.g. `mesh/tiny`) its policy does not allow. */
  policyRefused: 'ERR_POLICY_REFUSED',
  /** A peer outside the request's admission (not a team member, or refused by the gater). */
  peerNotAdmitted: 'ERR_PEER_NOT_ADMITTED',
  remoteStatus: 'ERR_REMOTE_STATUS',
  remoteUnauthorized: 'ERR_REMOTE_UNAUTHORIZED',
  remoteTimeout: 'ERR_REMOTE_TIMEOUT',
  remoteTooLarge: 'ERR_REMOTE_TOO_LARGE',
  remoteInvalid: 'ERR_REMOTE_INVALID_RESPONSE',
  remoteUnreachable: 'ERR_REMOTE_UNREACHABLE'
} as const

export class ProviderError extends PermagentError {}

/** Nothing may serve the request: each provider's reason, so the user sees what to change. */
export class NoProviderError extends ProviderError {
  readonly reasons: Record<string, string>

  constructor (model: string, policy: string, reasons: Record<string, string>, options: { unknownModel: boolean, cause?: unknown }) {
    const list = Object.entries(reasons).map(([id, why]) => `${id}: ${why}`).join('; ')
    super(options.unknownModel ? PROVIDER_ERRORS.modelNotFound : PROVIDER_ERRORS.noProvider,
      options.unknownModel ? `no model "${model}" under policy ${policy} (${list}); see GET /v1/models` : `no provider can serve model "${model}" under policy ${policy} (${list})`, { cause: options.cause })
    this.reasons = reasons
  }
}

/** A remote OpenAI-compatible API failed: its status, a timeout, an oversized or invalid reply. */
export class RemoteProviderError extends ProviderError {
  readonly status: number | undefined

  constructor (code: string, message: string, options: { status?: number, cause?: unknown } = {}) {
    super(code, message, { cause: options.cause })
    this.status = options.status
  }
}
