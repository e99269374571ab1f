import { randomBytes, randomInt } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import type { Stage } from '../inference/index.ts'
import { errorMessage, InvalidInputError, type Logger } from '../util/index.ts'
import { SplitInferenceError } from './errors.ts'
import { compareActivations, DEFAULT_RELATIVE_TOLERANCE, type ActivationComparison } from './verify-tolerance.ts'
export { compareActivations, type ActivationComparison } from './verify-tolerance.ts'
import { SideSession, wireValues, type SideWire } from './verify-session.ts'

/** Checking layer servers during a generation (docs/split-inference.md, "Verification"). */
export interface VerifyOptions {
  /**
   * Per hop and step, the chance (crypto random, so a server cannot tell which steps) that the
   * client checks the hop on a second server for the same span before going on (0..1, default 0).
   */
  rate?: number
  /** Canary probes per hop per generation: one before the prompt, the rest at random steps (true = 2, default 0). */
  canaries?: boolean | number
  /** Compute tolerance relative to the values' magnitude, on top of the wire quantization's rounding (default 1e-3). */
  tolerance?: number
  /** Let the client's own stage of a span settle a disagreement and answer canaries (default true; needs the span's weights in the store). */
  localReferee?: boolean
  /**
   * Called with each generation's report (also in the result's `verification`), for callers that
   * get the result through another layer, like a provider, that does not pass it on.
   */
  onReport?: (report: VerificationReport & { regenerated: number }) => void
}

export interface ResolvedVerifyOptions {
  rate: number
  canaries: number
  tolerance: number
  localReferee: boolean
  onReport?: VerifyOptions['onReport']
}

/** Most canary probes per generation. */
const MAX_CANARIES = 64
/** A canary's first step: 1 to this many rows (a short random "prompt"). */
const CANARY_PROMPT_ROWS = 8
/** Then 1 to this many one-row steps (like decoding), so a server that lies only on decode steps is probed too. */
const CANARY_DECODE_STEPS = 2

export const VERIFY_ERRORS = {
  /** A server's output disagreed with the referee; it is excluded for the model's lifetime. */
  faulty: 'ERR_SERVER_FAULTY',
  /** Two servers disagreed and nothing could settle which one is right. */
  conflict: 'ERR_VERIFY_CONFLICT'
} as const

export function resolveVerifyOptions (options: VerifyOptions | undefined): ResolvedVerifyOptions {
  const rate = options?.rate ?? 0
  if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1)) throw new InvalidInputError(`verify.rate is a fraction in 0..1, got ${String(rate)}`)
  const given = options?.canaries ?? 0
  const canaries = given === true ? 2 : given === false ? 0 : given
  if (!Number.isInteger(canaries) || canaries < 0 || canaries > MAX_CANARIES) throw new InvalidInputError(`verify.canaries is a boolean or an integer in 0..${MAX_CANARIES}`)
  const tolerance = options?.tolerance ?? DEFAULT_RELATIVE_TOLERANCE
  if (typeof tolerance !== 'number' || !(tolerance > 0 && tolerance < 1)) throw new InvalidInputError('verify.tolerance is a relative tolerance in (0, 1)')
  if (options?.onReport !== undefined && typeof options.onReport !== 'function') throw new InvalidInputError('verify.onReport is a function')
  return { rate, canaries, tolerance, localReferee: options?.localReferee ?? true, onReport: options?.onReport }
}

export interface Fault {
  hop: number
  start: number
  end: number
  peer: string
  /** How it was caught: a checked step of the generation, a canary, or while verifying another server. */
  kind: 'step' | 'canary' | 'verifier'
  /** First position with a wrong output (for a canary: in the canary session). */
  position: number
  /** The generation step at which it was caught (0 = the prompt; the last step + 1 = the final check). */
  step: number
  maxAbsDiff: number
  /** Largest difference over its allowance (> 1). */
  ratio: number
  /** What settled it: 'local' (the client's own stage) or the refereeing server's peer id. */
  referee: string
}

export interface HopVerification {
  hop: number
  start: number
  end: number
  /** Checks made on a second server, and the rows they covered. */
  checks: number
  rowsChecked: number
  /** Largest difference over its allowance among outputs that passed (the tolerance's headroom: < 1). */
  maxPassingRatio: number
  /** Checks due that found no second server for the span (verification unavailable). */
  unavailable: number
  canaries: number
  /** Canary probes that could not be answered (no local stage and no second server, or the probe failed). */
  canariesUnavailable: number
}

export interface VerificationReport {
  rate: number
  canaries: number
  tolerance: number
  hops: HopVerification[]
  faults: Fault[]
  /** Rows sent to second servers, referees and canary sessions. */
  extraRows: number
  /** Bytes those sessions moved, both ways, framing included. */
  extraBytes: number
  /**
   * First position whose output, from a server later found faulty, was used before it was
   * checked; null when every output used was checked or came from a server not found faulty.
   */
  suspectFrom: number | null
}

/** One hop of the chain as the verifier sees it. */
export interface VerifiedHop {
  index: number
  start: number
  end: number
  /** Every input the span received, in position order (the run's own list; the current step is passed apart). */
  inputs: readonly Float32Array[]
  /** The server holding the span's session now, if any. */
  primary: () => PeerId | null
}

export interface VerifyContext {
  wire: SideWire
  logger: Logger
  options: ResolvedVerifyOptions
  /** Servers a hop may use now, primary first, banned and faulty ones skipped. */
  candidates: (hop: number, exclude: Set<string>) => PeerId[]
  /** Excludes a server for a while (it failed, it did not lie). */
  ban: (peer: PeerId) => void
  /** Excludes a server for the model's lifetime (it answered wrongly). */
  markFaulty: (peer: PeerId) => void
  /** The client's own stage for a span, or null when the store cannot open it. */
  localStage: (span: { start: number, end: number }) => Promise<Stage | null>
  /** Head-layer activations of random token ids: canary inputs that look like real traffic and carry no user data. */
  randomActivations: (rows: number) => Promise<Float32Array>
  /** Drops a hop's session on a server a canary caught; the hop's next step re-routes it (with replay). */
  dropPrimary: (hop: number, peer: PeerId, err: Error) => void
  /** Generation steps planned (the prompt and each decode step), for placing canaries. */
  plannedSteps: number
}

/** What a second server returned for the rows from `from` on. */
interface CatchUp {
  peer: PeerId
  from: number
  values: Float32Array
}

/** An output the chain used (or is about to use) that no second server has confirmed yet. */
interface Pending {
  positionStart: number
  output: Float32Array
  peer: PeerId
}

interface HopState {
  hop: VerifiedHop
  /** The second server's session; its cache always holds exactly positions [0, checkedTo). */
  verifier: SideSession | null
  checkedTo: number
  pending: Pending[]
  /** First position each server produced in this run (what a canary's catch taints). */
  firstServed: Map<string, number>
  /** The referee's rows for a step whose server was caught on it: its replacement is compared to them. */
  truth: { positionStart: number, values: Float32Array, by: string } | null
  faulted: Set<string>
  warned: boolean
  report: HopVerification
}

export type StepCheck = Promise<CatchUp | null>

function uniform (): number {
  return randomBytes(4).readUInt32LE(0) / 2 ** 32
}

function concat (parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

/** A server's output disagreed with a referee: runHop re-routes the span. */
export class FaultyServerError extends SplitInferenceError {
  constructor (message: string) {
    super(VERIFY_ERRORS.faulty, message)
  }
}

/** Two servers disagreed and no referee could decide: the output cannot be trusted. */
export class VerifyConflictError extends SplitInferenceError {
  constructor (message: string) {
    super(VERIFY_ERRORS.conflict, message)
  }
}

/**
 * Verification of one generation. Per hop a verifier session on a second server catches up
 * lazily: at a sampled step it gets every input since the last check as one step, and its rows
 * are compared with the outputs the chain used. A disagreement goes to a referee (the client's
 * own stage of the span, else a third server, majority wins); a server that answered wrongly is
 * excluded for the model's lifetime, reported, and its span re-routed. Canary probes send random
 * activations on separate sessions and compare with the referee.
 */
export class RunVerifier {
  private readonly ctx: VerifyContext
  private readonly states: HopState[]
  private readonly faults: Fault[] = []
  private readonly canaryAt = new Set<number>()
  private extraRows = 0
  private extraBytes = 0
  private suspectFrom: number | null = null

  constructor (ctx: VerifyContext, hops: VerifiedHop[]) {
    this.ctx = ctx
    this.states = hops.map((hop) => ({
      hop,
      verifier: null,
      checkedTo: 0,
      pending: [],
      firstServed: new Map(),
      truth: null,
      faulted: new Set(),
      warned: false,
      report: { hop: hop.index, start: hop.start, end: hop.end, checks: 0, rowsChecked: 0, maxPassingRatio: 0, unavailable: 0, canaries: 0, canariesUnavailable: 0 }
    }))
    const { canaries } = ctx.options
    if (canaries > 0) this.canaryAt.add(0)
    for (let i = 1; i < canaries && ctx.plannedSteps > 1; i++) this.canaryAt.add(randomInt(1, ctx.plannedSteps))
  }

  private get width (): number {
    return this.ctx.wire.manifest.spec.hiddenSize
  }

  private compare (a: Float32Array, b: Float32Array): ActivationComparison {
    return compareActivations(a, b, this.width, this.ctx.wire.quantization, this.ctx.options.tolerance)
  }

  /** The hop's inputs from position `from` on, then `current`. */
  private inputsFrom (state: HopState, from: number, current: Float32Array): Float32Array {
    const parts: Float32Array[] = []
    let at = 0
    for (const input of state.hop.inputs) {
      const rows = input.length / this.width
      if (at + rows > from) parts.push(at >= from ? input : input.subarray((from - at) * this.width))
      at += rows
    }
    parts.push(current)
    return concat(parts)
  }

  /** Runs canary probes if this generation step is one of the chosen ones. */
  async beforeStep (step: number): Promise<void> {
    if (this.canaryAt.has(step)) await this.canaryProbe(step)
  }

  /**
   * Decides (crypto random, at `rate`) whether this step of hop `index` is checked; if so starts
   * the verifier's catch-up at once, so it runs while the primary computes the same step.
   */
  begin (index: number, hidden: Float32Array): StepCheck | null {
    const { rate } = this.ctx.options
    if (rate === 0 || (rate < 1 && uniform() >= rate)) return null
    const state = this.states[index]
    return this.catchUp(state, hidden).catch((err: unknown) => {
      if (!this.ctx.wire.signal.aborted) this.ctx.logger.warn({ hop: index, err: errorMessage(err) }, 'verification catch-up failed')
      return null
    })
  }

  private async catchUp (state: HopState, current: Float32Array, final = false): Promise<CatchUp | null> {
    const primary = state.hop.primary() ?? this.ctx.candidates(state.hop.index, new Set())[0]
    const exclude = new Set<string>(primary !== undefined ? [primary.toString()] : [])
    for (;;) {
      this.ctx.wire.signal.throwIfAborted()
      if (state.verifier !== null && exclude.has(state.verifier.peer.toString())) this.retire(state, state.verifier)
      if (state.verifier === null) {
        const peer = this.ctx.candidates(state.hop.index, exclude)[0]
        if (peer === undefined) {
          if (!final) state.report.unavailable++
          if (!state.warned) this.ctx.logger.warn({ hop: state.hop.index, start: state.hop.start, end: state.hop.end }, 'verification unavailable: no second server for this span')
          state.warned = true
          return null
        }
        exclude.add(peer.toString())
        try {
          state.verifier = await SideSession.open(this.ctx.wire, peer, state.hop)
        } catch (err) {
          if (this.ctx.wire.signal.aborted) throw err
          this.ctx.logger.warn({ hop: state.hop.index, peer: peer.toString(), err: errorMessage(err) }, 'verifier failed to open; trying another')
          this.ctx.ban(peer)
          continue
        }
      }
      const verifier = state.verifier
      const from = verifier.positions
      const batch = this.inputsFrom(state, from, current)
      if (batch.length === 0) return null
      try {
        const values = await verifier.step(batch)
        this.extraRows += batch.length / this.width
        return { peer: verifier.peer, from, values }
      } catch (err) {
        if (this.ctx.wire.signal.aborted) throw err
        this.ctx.logger.warn({ hop: state.hop.index, peer: verifier.peer.toString(), err: errorMessage(err) }, 'verifier failed; trying another')
        this.retire(state, verifier, err as Error)
        this.ctx.ban(verifier.peer)
        exclude.add(verifier.peer.toString())
      }
    }
  }

  /** Drops a side session and counts what it moved. */
  private retire (state: HopState | null, session: SideSession, err?: Error): void {
    if (state !== null && state.verifier === session) state.verifier = null
    this.extraBytes += session.bytes
    if (err !== undefined) session.abort(err)
    else void session.close()
  }

  private taint (position: number): void {
    this.suspectFrom = this.suspectFrom === null ? position : Math.min(this.suspectFrom, position)
  }

  private fault (state: HopState, peer: PeerId, kind: Fault['kind'], position: number, step: number, cmp: ActivationComparison, referee: string): void {
    const id = peer.toString()
    this.ctx.markFaulty(peer)
    if (state.faulted.has(id)) return
    state.faulted.add(id)
    const fault: Fault = { hop: state.hop.index, start: state.hop.start, end: state.hop.end, peer: id, kind, position, step, maxAbsDiff: cmp.maxAbsDiff, ratio: cmp.ratio, referee }
    this.faults.push(fault)
    this.ctx.logger.warn(fault, 'layer server answered wrongly; excluded')
  }

  /**
   * Records the output a hop's primary returned for a step and, when the step was sampled,
   * compares every unchecked output of the hop with the second server's rows. Throws
   * FaultyServerError when the primary is caught (runHop then re-routes the span and calls this
   * again with the replacement's output, which is compared with the referee's rows).
   */
  async settle (index: number, hidden: Float32Array, positionStart: number, output: Float32Array, peer: PeerId, check: StepCheck | null, step: number): Promise<void> {
    const state = this.states[index]
    if (!state.firstServed.has(peer.toString())) state.firstServed.set(peer.toString(), positionStart)
    const rows = hidden.length / this.width
    const truth = state.truth
    if (truth !== null && truth.positionStart === positionStart) {
      const cmp = this.compare(output, truth.values)
      if (!cmp.ok) {
        this.fault(state, peer, 'step', positionStart + cmp.firstBadRow, step, cmp, truth.by)
        throw new FaultyServerError(`layers ${state.hop.start}-${state.hop.end}: ${peer.toString()} answered step ${step} wrongly`)
      }
      state.truth = null
      state.checkedTo = positionStart + rows
      state.report.rowsChecked += rows
      return
    }
    state.truth = null
    if (this.ctx.options.rate === 0) return
    state.pending.push({ positionStart, output, peer })
    if (check === null) return
    const got = await check
    if (got === null) return
    if (got.peer.equals(peer)) {
      // the span moved to the verifier's server while it was checking: start a fresh verifier next time
      if (state.verifier !== null) this.retire(state, state.verifier)
      state.report.unavailable++
      return
    }
    await this.judge(state, got, hidden, { positionStart, peer }, step)
  }

  /** Compares a catch-up with the unchecked outputs; a disagreement goes to the referee. */
  private async judge (state: HopState, got: CatchUp, current: Float32Array, inFlight: { positionStart: number, peer: PeerId } | null, step: number): Promise<void> {
    const width = this.width
    const end = got.from + got.values.length / width
    const rowsAt = (values: Float32Array, from: number, position: number, length: number): Float32Array => values.subarray((position - from) * width, (position - from) * width + length)
    const checkedRows = end - state.checkedTo
    let disagree = false
    for (const p of state.pending) {
      const cmp = this.compare(p.output, rowsAt(got.values, got.from, p.positionStart, p.output.length))
      if (cmp.ok) state.report.maxPassingRatio = Math.max(state.report.maxPassingRatio, cmp.ratio)
      else disagree = true
    }
    state.report.checks++
    state.report.rowsChecked += checkedRows
    if (!disagree) {
      state.pending = []
      state.checkedTo = end
      return
    }
    const referee = await this.referee(state, this.inputsFrom(state, 0, current), new Set([got.peer.toString(), ...state.pending.map((p) => p.peer.toString())]))
    if (referee === null) {
      throw new VerifyConflictError(`layers ${state.hop.start}-${state.hop.end}: servers disagree and no referee is available (no third server, no local weights)`)
    }
    const verifierCmp = this.compare(got.values, referee.values.subarray(got.from * width))
    const wrongPending = state.pending.map((p) => ({ p, cmp: this.compare(p.output, rowsAt(referee.values, 0, p.positionStart, p.output.length)) })).filter((x) => !x.cmp.ok)
    if (referee.by !== 'local' && !verifierCmp.ok && wrongPending.length > 0) {
      throw new VerifyConflictError(`layers ${state.hop.start}-${state.hop.end}: three servers disagree; no majority`)
    }
    if (!verifierCmp.ok) {
      this.fault(state, got.peer, 'verifier', got.from + verifierCmp.firstBadRow, step, verifierCmp, referee.by)
      if (state.verifier !== null) this.retire(state, state.verifier)
    }
    let inFlightFaulty = false
    for (const { p, cmp } of wrongPending) {
      this.fault(state, p.peer, 'step', p.positionStart + cmp.firstBadRow, step, cmp, referee.by)
      if (inFlight === null || p.positionStart < inFlight.positionStart) this.taint(p.positionStart + cmp.firstBadRow)
      if (inFlight !== null && p.peer.equals(inFlight.peer)) inFlightFaulty = true
    }
    state.pending = []
    state.checkedTo = end
    if (inFlight !== null && inFlightFaulty) {
      // the step in flight is re-run on a replacement and compared with the referee's rows
      state.truth = { positionStart: inFlight.positionStart, values: referee.values.slice(inFlight.positionStart * width, end * width), by: referee.by }
      state.checkedTo = inFlight.positionStart
      throw new FaultyServerError(`layers ${state.hop.start}-${state.hop.end}: ${inFlight.peer.toString()} answered wrongly`)
    }
  }

  /**
   * The span's output for `inputs` (positions 0 … n) from something other than the disputing
   * servers: the client's own stage when allowed and possible, else a third server.
   */
  private async referee (state: HopState, inputs: Float32Array, exclude: Set<string>): Promise<{ values: Float32Array, by: string } | null> {
    const { wire, options } = this.ctx
    const span = { start: state.hop.start, end: state.hop.end }
    if (options.localReferee) {
      const stage = await this.ctx.localStage(span)
      if (stage !== null) {
        const out = await stage.run({ hidden: wireValues(inputs, this.width, wire.quantization) }, stage.newCache())
        return { values: out.hidden as Float32Array, by: 'local' }
      }
    }
    for (const peer of this.ctx.candidates(state.hop.index, exclude)) {
      let session: SideSession | undefined
      try {
        session = await SideSession.open(wire, peer, span)
        const values = await session.step(inputs)
        this.extraRows += inputs.length / this.width
        return { values, by: peer.toString() }
      } catch (err) {
        if (wire.signal.aborted) throw err
        this.ctx.logger.warn({ hop: state.hop.index, peer: peer.toString(), err: errorMessage(err) }, 'referee failed; trying another')
        this.ctx.ban(peer)
      } finally {
        if (session !== undefined) this.retire(null, session)
      }
    }
    return null
  }

  /**
   * Random activations (the head's output for BOS and random token ids) through every hop on
   * fresh sessions: a random-length first step, then one or two one-row steps, each compared with
   * the client's own stage (or a second server). The reference outputs of one hop are the next
   * hop's canary input, so each server sees activations of the depth it expects.
   */
  private async canaryProbe (step: number): Promise<void> {
    const steps = [randomInt(1, CANARY_PROMPT_ROWS + 1), ...Array.from({ length: randomInt(1, CANARY_DECODE_STEPS + 1) }, () => 1)]
    let input: Float32Array | null = await this.ctx.randomActivations(steps.reduce((a, b) => a + b, 0))
    for (const state of this.states) {
      if (input === null) return
      input = await this.probeHop(state, input, steps, step)
    }
  }

  /** One hop's canary; returns the next hop's canary input, or null when there is none to trust. */
  private async probeHop (state: HopState, input: Float32Array, steps: number[], step: number): Promise<Float32Array | null> {
    const { wire, options } = this.ctx
    const width = this.width
    const primary = state.hop.primary() ?? this.ctx.candidates(state.hop.index, new Set())[0]
    const span = { start: state.hop.start, end: state.hop.end }
    const local = options.localReferee ? await this.ctx.localStage(span) : null
    // the span's right output for the whole canary, when the probe cannot give it
    const localOutput = async (): Promise<Float32Array | null> => local === null ? null : (await local.run({ hidden: wireValues(input, width, wire.quantization) }, local.newCache())).hidden as Float32Array
    if (primary === undefined) return await localOutput()
    const localCache = local?.newCache()
    const sessions: SideSession[] = []
    const outputs: Float32Array[] = []
    try {
      let reference: SideSession | null = null
      if (local === null) {
        const second = this.ctx.candidates(state.hop.index, new Set([primary.toString()]))[0]
        if (second !== undefined) { reference = await SideSession.open(wire, second, span); sessions.push(reference) }
      }
      const answerable = local !== null || reference !== null
      const probe = await SideSession.open(wire, primary, span)
      sessions.push(probe)
      let at = 0
      for (const rows of steps) {
        const rowsIn = input.subarray(at * width, (at + rows) * width)
        const ref = reference
        const [got, want] = await Promise.all([
          probe.step(rowsIn),
          local !== null ? local.run({ hidden: wireValues(rowsIn, width, wire.quantization) }, localCache as ReturnType<Stage['newCache']>).then((o) => o.hidden as Float32Array) : ref?.step(rowsIn) ?? Promise.resolve(null)
        ])
        this.extraRows += rows * (ref !== null ? 2 : 1)
        const cmp = want !== null ? this.compare(got, want) : null
        let right = want ?? got
        if (cmp !== null && !cmp.ok) {
          const wrong = await this.settleCanary(state, primary, ref, input.subarray(0, (at + rows) * width), at, rows, got, cmp, local !== null, step)
          if (wrong === 'probed') {
            state.report.canaries++
            this.dropCaught(state, primary)
            return await localOutput()
          }
          // the second server was the wrong one: the probed server's rows stand, the rest goes unchecked
          right = got
          reference = null
        }
        outputs.push(right)
        at += rows
      }
      if (!answerable) state.report.canariesUnavailable++
      else state.report.canaries++
      return concat(outputs)
    } catch (err) {
      if (wire.signal.aborted || err instanceof VerifyConflictError) throw err
      state.report.canariesUnavailable++
      this.ctx.logger.warn({ hop: state.hop.index, step, err: errorMessage(err) }, 'canary probe failed')
      return await localOutput()
    } finally {
      for (const session of sessions) this.retire(null, session)
    }
  }

  /** A canary answer disagreed with its reference: which of the two is wrong (the probed server or the second one). */
  private async settleCanary (state: HopState, primary: PeerId, reference: SideSession | null, inputs: Float32Array, at: number, rows: number, got: Float32Array, cmp: ActivationComparison, localReference: boolean, step: number): Promise<'probed' | 'reference'> {
    if (localReference || reference === null) {
      this.fault(state, primary, 'canary', at + cmp.firstBadRow, step, cmp, 'local')
      return 'probed'
    }
    const referee = await this.referee(state, inputs, new Set([primary.toString(), reference.peer.toString()]))
    if (referee === null) throw new VerifyConflictError(`layers ${state.hop.start}-${state.hop.end}: a canary answer differs between two servers and no referee is available`)
    const truth = referee.values.subarray(at * this.width, (at + rows) * this.width)
    const primaryCmp = this.compare(got, truth)
    if (primaryCmp.ok) {
      this.fault(state, reference.peer, 'canary', at + cmp.firstBadRow, step, cmp, referee.by)
      return 'reference'
    }
    this.fault(state, primary, 'canary', at + primaryCmp.firstBadRow, step, primaryCmp, referee.by)
    return 'probed'
  }

  /** A canary caught the hop's server: outputs it gave that were not checked are suspect, and the hop re-routes. */
  private dropCaught (state: HopState, peer: PeerId): void {
    const first = state.firstServed.get(peer.toString())
    if (first !== undefined) {
      const unchecked = state.pending.filter((p) => p.peer.equals(peer)).map((p) => p.positionStart)
      const from = this.ctx.options.rate > 0 ? Math.min(...unchecked, Infinity) : Math.max(first, state.checkedTo)
      if (Number.isFinite(from)) this.taint(from)
    }
    this.ctx.dropPrimary(state.hop.index, peer, new FaultyServerError(`layers ${state.hop.start}-${state.hop.end}: ${peer.toString()} failed a canary`))
  }

  /** At the end of a generation: checks every hop's outputs not checked yet (they were used, so wrong ones taint the result). */
  async finish (step: number): Promise<void> {
    if (this.ctx.options.rate === 0) return
    for (const state of this.states) {
      if (state.pending.length === 0) continue
      const got = await this.catchUp(state, new Float32Array(0), true).catch((err: unknown) => {
        if (this.ctx.wire.signal.aborted) throw err
        this.ctx.logger.warn({ hop: state.hop.index, err: errorMessage(err) }, 'final verification failed')
        return null
      })
      if (got === null) continue
      await this.judge(state, got, new Float32Array(0), null, step)
    }
  }

  report (): VerificationReport {
    const live = this.states.reduce((n, s) => n + (s.verifier?.bytes ?? 0), 0)
    return {
      rate: this.ctx.options.rate,
      canaries: this.ctx.options.canaries,
      tolerance: this.ctx.options.tolerance,
      hops: this.states.map((s) => ({ ...s.report })),
      faults: [...this.faults],
      extraRows: this.extraRows,
      extraBytes: this.extraBytes + live,
      suspectFrom: this.suspectFrom
    }
  }

  /** Closes the verifier sessions. */
  async close (): Promise<void> {
    await Promise.allSettled(this.states.map(async (state) => {
      const verifier = state.verifier
      if (verifier === null) return
      state.verifier = null
      this.extraBytes += verifier.bytes
      await verifier.close()
    }))
  }
}
