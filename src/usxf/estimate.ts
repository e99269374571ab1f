import type { MigrationWire } from './wire.ts'

/** The warm-start decision and the numbers behind it (always reported, migrated or not). */
export interface WarmStartEstimate {
  decision: 'migrate' | 'reprefill'
  /** The caller asked to migrate whatever the estimate (drain). */
  forced: boolean
  positions: number
  /** The state at f32. */
  rawBytes: number
  /** Bytes the chosen quantization puts on the wire (payload and framing). */
  wireBytes: number
  rttMs: number
  bandwidthBytesPerSecond: number
  /** The target's measured prefill rate for this model. */
  prefillTokensPerSecond: number
  /** Estimated migration: wire bytes over the measured bandwidth, codec time, and commit round trips. */
  transferMs: number
  /** Estimated re-prefill of the same positions on the target. */
  reprefillMs: number
  /** transferMs / reprefillMs. */
  ratio: number
  /** Migrate when ratio < threshold. */
  threshold: number
}

const MIN_PROBE = 64 * 1024
const MAX_PROBE = 1024 * 1024

/**
 * Measures the link: small probes for the round trip, padded probes for bandwidth (their time
 * beyond a round trip is taken as transfer time; at least a tenth of the whole, so a link faster
 * than the clock can tell is not called infinite). The best of a few of each, since one slow
 * scheduling hiccup on a busy host would otherwise decide the estimate.
 */
export async function probeLink (wire: MigrationWire, wireBytes: number, options: { signal?: AbortSignal, timeoutMs: number }, rounds = 3): Promise<{ rttMs: number, bandwidthBytesPerSecond: number }> {
  const size = Math.min(MAX_PROBE, Math.max(MIN_PROBE, Math.floor(wireBytes / 16)))
  const timed = async (sequence: number, padding: number): Promise<number> => {
    const started = performance.now()
    await wire.sendControl({ probe: { sequence, padding: new Uint8Array(padding) } }, options.signal)
    await wire.expect('probeAck', options)
    return performance.now() - started
  }
  let rttMs = Infinity
  let paddedMs = Infinity
  for (let i = 0; i < rounds; i++) rttMs = Math.min(rttMs, await timed(2 * i, 0))
  for (let i = 0; i < rounds; i++) paddedMs = Math.min(paddedMs, await timed(2 * i + 1, size))
  const transferMs = Math.max(paddedMs - rttMs, paddedMs / 10, 0.001)
  return { rttMs, bandwidthBytesPerSecond: size / (transferMs / 1000) }
}

export type WarmStartInput = Omit<WarmStartEstimate, 'decision' | 'transferMs' | 'reprefillMs' | 'ratio'> & { codecBytesPerSecond: number }

export function estimateWarmStart (input: WarmStartInput): WarmStartEstimate {
  // The codec pipelines with the network, so the slower of the two bounds the transfer; three round
  // trips remain (begin, attach report, commit).
  const networkMs = (input.wireBytes / input.bandwidthBytesPerSecond) * 1000
  const codecMs = (input.rawBytes / input.codecBytesPerSecond) * 1000
  const transferMs = Math.max(networkMs, codecMs) + 3 * input.rttMs
  const reprefillMs = input.prefillTokensPerSecond > 0 ? (input.positions / input.prefillTokensPerSecond) * 1000 : Infinity
  const ratio = reprefillMs > 0 ? transferMs / reprefillMs : Infinity
  const { codecBytesPerSecond, ...measured } = input
  return { ...measured, decision: input.forced || ratio < input.threshold ? 'migrate' : 'reprefill', transferMs, reprefillMs, ratio }
}
