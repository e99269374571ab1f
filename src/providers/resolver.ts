import { PermagentError, InvalidInputError, errorMessage, silentLogger, type Logger } from '../util/index.ts'
import { NoProviderError, PROVIDER_ERRORS, ProviderError } from './errors.ts'
import { policyAllows, policyFor } from './policy.ts'
import { asksVerification } from './split-options.ts'
import type { InferencePolicy, InferenceProvider, ProviderKind, ProviderModel, ProviderRequest, ProviderResult, RouteReport } from './types.ts'

export interface ProviderResolverOptions {
  local?: InferenceProvider
  /** The mesh provider for a request: with a team, admission to that team's current members (team-mesh). */
  mesh?: (team: string | undefined) => InferenceProvider
  /** An OpenAI-compatible URL (privacy class cloud); used only under `cloud-allowed`. */
  remote?: InferenceProvider
  /** Policy of requests that name none (default local-only: nothing leaves the machine). */
  defaultPolicy?: InferencePolicy
  /** Team of team-mesh requests that name none. */
  defaultTeam?: string
  logger?: Logger
}

export interface ResolvedRequest extends ProviderRequest {
  /** A model id: `NAME` (the resolver picks), or pinned `local/NAME`, `mesh/NAME`, `remote/ID`. */
  model: string
  policy?: InferencePolicy
  team?: string
  /** Called once, before the first token is passed on (or at the end): the provider that answers. */
  onRoute?: (route: RouteReport) => void
}

export interface ProviderResolver {
  /** Generates through the first provider, most private first, that the policy allows and that can serve the model. */
  generate: (request: ResolvedRequest, signal?: AbortSignal) => Promise<ProviderResult>
  /** Models by id (pinned ids for mesh and remote), with their provider and privacy class. */
  models: (request?: { policy?: InferencePolicy, team?: string }, signal?: AbortSignal) => Promise<ProviderModel[]>
  /** The mesh provider for a team (team-mesh) or none (mesh), for callers that want the mesh only (`POST /api/run/mesh`). */
  meshProvider: (team: string | undefined) => InferenceProvider | undefined
  readonly defaultPolicy: InferencePolicy
  close: () => Promise<void>
}

const PINS: readonly ProviderKind[] = ['local', 'mesh', 'remote']

/** `mesh/tiny` → pinned to mesh, model tiny; `tiny` or `org/model` → any provider. */
export function parseModelId (id: string): { pin: ProviderKind | null, model: string } {
  const slash = id.indexOf('/')
  const head = slash === -1 ? '' : id.slice(0, slash)
  if ((PINS as readonly string[]).includes(head) && slash < id.length - 1) return { pin: head as ProviderKind, model: id.slice(slash + 1) }
  return { pin: null, model: id }
}

/** Failures that mean "this provider cannot serve it now", after which a less private one may be tried. */
function unavailable (err: unknown): boolean {
  if (!(err instanceof PermagentError)) return false
  return ['ERR_NO_ROUTE', 'ERR_SERVER_FAILED', PROVIDER_ERRORS.noProvider, PROVIDER_ERRORS.modelNotFound].includes(err.code)
}

/**
 * The policy resolver: per request a policy (local-only, team-mesh, mesh, cloud-allowed) and a
 * team; tries local (if the model is stored and fits), then the team's members, then the mesh,
 * then the remote URL, skipping what the policy forbids. A provider that cannot serve before the
 * first token falls through to the next; when none can, a typed error names each one's reason.
 */
export function createProviderResolver (options: ProviderResolverOptions): ProviderResolver {
  const logger = (options.logger ?? silentLogger()).child({ module: 'providers' })
  const defaultPolicy = options.defaultPolicy ?? 'local-only'

  const settle = (request: { policy?: InferencePolicy, team?: string }): { policy: InferencePolicy, team: string | undefined } => {
    const policy = request.policy ?? defaultPolicy
    const team = request.team ?? (policy === 'team-mesh' ? options.defaultTeam : undefined)
    if (policy === 'team-mesh' && team === undefined) throw new InvalidInputError('policy team-mesh needs a team (the request\'s team, or providers.defaultTeam)')
    return { policy, team }
  }

  /** The providers to try in order, each with why it is skipped (null: try it). */
  const plan = (pin: ProviderKind | null, policy: InferencePolicy, team: string | undefined, verified = false): Array<{ id: string, provider: InferenceProvider | null, skip: string | null, unchecked?: true }> => {
    const steps: Array<{ id: string, kind: ProviderKind, privacy: 'local' | 'team-mesh' | 'mesh' | 'cloud', make: () => InferenceProvider | undefined }> = [
      { id: 'local', kind: 'local', privacy: 'local', make: () => options.local },
      ...(team !== undefined ? [{ id: 'team-mesh', kind: 'mesh' as const, privacy: 'team-mesh' as const, make: () => options.mesh?.(team) }] : []),
      { id: 'mesh', kind: 'mesh', privacy: 'mesh', make: () => options.mesh?.(undefined) },
      { id: 'remote', kind: 'remote', privacy: 'cloud', make: () => options.remote }
    ]
    return steps.filter((s) => pin === null || s.kind === pin).map((s) => {
      if (!policyAllows(policy, s.privacy)) return { id: s.id, provider: null, skip: `policy ${policy} does not allow privacy class ${s.privacy} (ask for ${policyFor(s.privacy)})` }
      // an answer the request wanted checked must not come back unchecked
      if (verified && s.kind === 'remote') return { id: s.id, provider: null, skip: 'the request asks for verification; a remote API\'s answers cannot be checked', unchecked: true }
      const provider = s.make() ?? null
      return { id: s.id, provider, skip: provider === null ? (s.kind === 'remote' ? 'no remote API configured (providers.remote)' : `no ${s.id} provider on this node`) : null }
    })
  }

  return {
    defaultPolicy,
    async generate (request, signal) {
      const { policy, team } = settle(request)
      const { pin, model } = parseModelId(request.model)
      const steps = plan(pin, policy, team, asksVerification(request.split?.verify))
      if (pin !== null && steps.every((s) => s.provider === null && s.skip?.startsWith('policy') === true)) {
        throw new ProviderError(PROVIDER_ERRORS.policyRefused, `model ${request.model} is pinned to the ${pin} provider; ${steps.map((s) => s.skip).join('; ')}`)
      }
      const reasons: Record<string, string> = {}
      let unknownEverywhere = true
      let lastError: unknown
      for (const step of steps) {
        if (step.provider === null) {
          reasons[step.id] = step.skip as string
          // it may know the model: the request's verification is what it cannot serve
          if (step.unchecked === true) unknownEverywhere = false
          continue
        }
        const provider = step.provider
        const refused = await provider.check(model, signal)
        if (refused !== null) {
          reasons[step.id] = refused.reason
          if (!refused.unknownModel) unknownEverywhere = false
          continue
        }
        unknownEverywhere = false
        let routed = false
        const announce = (): void => {
          if (routed) return
          routed = true
          request.onRoute?.({ provider: provider.id, kind: provider.kind, privacy: provider.privacy, ...(provider.privacy === 'team-mesh' ? { team } : {}) })
        }
        logger.debug({ model: request.model, provider: provider.id, policy }, 'provider chosen')
        try {
          const result = await provider.generate({
            ...request,
            model,
            onToken: request.onToken !== undefined ? (e) => { announce(); request.onToken?.(e) } : undefined
          }, signal)
          announce()
          return result
        } catch (err) {
          // once tokens went out the answer cannot move to another provider
          if (routed || signal?.aborted === true || !unavailable(err)) throw err
          reasons[step.id] = errorMessage(err)
          lastError = err
          logger.info({ model: request.model, provider: provider.id, err: errorMessage(err) }, 'provider cannot serve; trying the next one the policy allows')
        }
      }
      throw new NoProviderError(request.model, policy, reasons, { unknownModel: unknownEverywhere, cause: lastError })
    },
    async models (request = {}, signal) {
      const { policy, team } = settle(request)
      const out: ProviderModel[] = []
      // listing asks peers what they serve (no prompt leaves), so mesh models are listed under any
      // policy, each with its privacy class; a cloud API is not even asked unless the policy allows it
      for (const step of plan(null, policy === 'cloud-allowed' ? policy : 'mesh', team)) {
        if (step.provider === null) continue
        try {
          for (const m of await step.provider.models(signal)) out.push({ ...m, id: step.provider.kind === 'local' ? m.id : `${step.provider.kind}/${m.id}` })
        } catch (err) {
          signal?.throwIfAborted()
          logger.warn({ provider: step.id, err: errorMessage(err) }, 'cannot list the models of a provider')
        }
      }
      const seen = new Set<string>()
      return out.filter((m) => !seen.has(m.id) && seen.add(m.id) !== undefined)
    },
    meshProvider: (team) => options.mesh?.(team),
    async close () {
      await options.local?.close()
      await options.remote?.close()
    }
  }
}
