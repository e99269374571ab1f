import type { SamplingOptions } from '../inference/index.ts'
import type { ChatMessage } from '../model/index.ts'
import type { Fault, PushReport, VerificationReport } from '../split/index.ts'
import type { UsxfQuantization } from '../usxf/index.ts'
import type { ExcludedPeer } from './faulty-peers.ts'

export type ProviderKind = 'local' | 'mesh' | 'remote'

/**
 * Where a request's data goes, from most to least private:
 * - `local`: nothing leaves this machine;
 * - `team-mesh`: activations (never text or token ids) go to current members of one team only;
 * - `mesh`: activations go to any peer the node admits;
 * - `cloud`: the prompt text goes to a third-party URL.
 */
export type PrivacyClass = 'local' | 'team-mesh' | 'mesh' | 'cloud'

/** What a request allows; each policy allows its own privacy class and every more private one. */
export type InferencePolicy = 'local-only' | 'team-mesh' | 'mesh' | 'cloud-allowed'

export const INFERENCE_POLICIES: readonly InferencePolicy[] = ['local-only', 'team-mesh', 'mesh', 'cloud-allowed']
export const PRIVACY_CLASSES: readonly PrivacyClass[] = ['local', 'team-mesh', 'mesh', 'cloud']

export interface ProviderTokenEvent {
  /** Text this token adds (may be empty while a multi-byte character completes). */
  text: string
  /** The token id, when the provider knows it (local and mesh; a remote API gives text only). */
  id?: number
}

/** Checking layer servers during one generation (docs/split-inference.md, "Verification"). */
export interface SplitVerifyRequest {
  /** Per hop and step, the fraction re-checked on a second server (0..1; 0 = no sampled checks). */
  rate: number
  /** Canary probes per hop (0..64); left out: the provider's default, else 2 when rate > 0, else 0. */
  canaries?: number
}

/**
 * Split-inference options of one request; a mesh provider uses them over its defaults (from
 * config), other providers do not split, and the resolver does not send a request that asks for
 * verification to a remote API (whose answers cannot be checked).
 */
export interface SplitRequestOptions {
  verify?: SplitVerifyRequest
  /** Activations on the wire. */
  quantization?: UsxfQuantization
  /** Layers kept here at the start and at the end. */
  headLayers?: number
  tailLayers?: number
  /** Servers pass activations to the next server instead of back through this node (off by default; verification turns it off). */
  push?: boolean
}

export interface ProviderRequest {
  /** The model as the provider knows it (a stored model name here, the remote's model id there). */
  model: string
  prompt?: string
  promptIds?: readonly number[]
  messages?: ChatMessage[]
  maxTokens: number
  sampling?: SamplingOptions
  /** Token ids that end generation (local and mesh only: a remote API has its own tokenizer). */
  stopTokens?: readonly number[]
  /** Mesh only: verification, wire quantization, local layers. */
  split?: SplitRequestOptions
  onToken?: (event: ProviderTokenEvent) => void
}

/** One middle span of a mesh route and the peer that served it. */
export interface RouteHop {
  start: number
  end: number
  peer: string
}

/** Which provider answered and what left the machine for it: every response carries one. */
export interface RouteReport {
  provider: string
  kind: ProviderKind
  privacy: PrivacyClass
  /** team-mesh: the team whose members served. */
  team?: string
  /** mesh: the planned chain (first choice per span). */
  hops?: RouteHop[]
  /** mesh: servers replaced during the run. */
  failovers?: Array<{ hop: number, from: string, to: string, code: string, replayed: number }>
  /** mesh: sessions a draining server handed to another mid-run (nothing replayed). */
  handoffs?: Array<{ hop: number, from: string, to: string, positions: number }>
  /** mesh with push asked for: steps pushed server to server, and why not when it fell back. */
  push?: PushReport
  /**
   * mesh with verification on: the servers caught answering wrongly (each excluded from the rest of
   * the request; how it was caught, by whom, by how much), as in `verification.faults`.
   */
  faults?: Fault[]
  /** mesh: candidate servers not used because an earlier request caught them answering wrongly (until when). */
  excluded?: ExcludedPeer[]
  /** mesh with verification on: per hop the checks made and the checks that found no second server (`unavailable`), canaries, cost. */
  verification?: VerificationReport & { regenerated: number }
  /** remote: the origin the prompt went to (no path, no credentials). */
  origin?: string
}

export interface ProviderResult {
  text: string
  /** Generated token ids (local and mesh). */
  tokens?: number[]
  /** Prompt token ids (local and mesh). */
  promptIds?: number[]
  promptTokens: number
  completionTokens: number
  finishReason: 'stop' | 'length' | 'context'
  prefillMs?: number
  decodeMs?: number
  route: RouteReport
}

export interface ProviderModel {
  /** The model id a client passes. */
  id: string
  provider: string
  kind: ProviderKind
  privacy: PrivacyClass
}

export interface ProviderRefusal {
  reason: string
  /** The provider does not know the model at all (as opposed to: knows it, cannot run it now). */
  unknownModel: boolean
}

/**
 * Something that generates text: this process (local), peers serving the middle layers (mesh) or
 * an OpenAI-compatible URL (remote). `check` says cheaply whether it can take a model now.
 */
export interface InferenceProvider {
  readonly id: string
  readonly kind: ProviderKind
  readonly privacy: PrivacyClass
  /** Models it can serve now. */
  models: (signal?: AbortSignal) => Promise<ProviderModel[]>
  /** null when it may serve the model; otherwise why not, in words (for the resolver's error). */
  check: (model: string, signal?: AbortSignal) => Promise<ProviderRefusal | null>
  generate: (request: ProviderRequest, signal?: AbortSignal) => Promise<ProviderResult>
  close: () => Promise<void>
}
