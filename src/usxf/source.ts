import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Identity } from '../identity/index.ts'
import type { Logger } from '../util/index.ts'
import { DEFAULT_BLOCK_TOKENS, DEFAULT_QUANT_GROUP, UsxfEncoder } from './encoder.ts'
import { UsxfCommitUnknownError, UsxfFidelityError, UsxfFormatError, UsxfRefusedError } from './errors.ts'
import { estimateWarmStart, probeLink, type WarmStartEstimate } from './estimate.ts'
import { compareContinuations, greedyContinuation, type FidelityRecord } from './fidelity.ts'
import { QUANTIZATIONS, RECORD_CHUNK, RECORD_OVERHEAD, fromHex, payloadSize, quantizationCode, type UsxfQuantization } from './format.ts'
import { extractKv, kvStateInput } from './kv.ts'
import { sessionPositions, type SessionTable } from './sessions.ts'
import { MAX_CHUNK_BYTES, MigrationWire, WINDOW_BYTES } from './wire.ts'

export interface MigrateOptions {
  /** Wire quantizations in order of preference (default ['none']); the first the target takes wins. */
  quantization?: UsxfQuantization | UsxfQuantization[]
  /** auto: migrate only if the estimate beats re-prefill; always: migrate regardless (drain). */
  mode?: 'auto' | 'always'
  /** Migrate when estimated transfer / re-prefill is below this (default 1). */
  threshold?: number
  /** Greedy tokens both sides generate and compare before commit (default 16; 0 skips). */
  fidelityTokens?: number
  /** Commit although a lossy transfer changed the continuation (default: only for int8-block). */
  acceptDivergence?: boolean
  blockTokens?: number
  chunkBytes?: number
  /** int8-block: values per scale (default 32; the head size gives one scale per head and position). */
  quantGroup?: number
  signal?: AbortSignal
}

export interface MigrationTimings {
  totalMs: number
  /** Dial, capability exchange and link probes. */
  negotiateMs: number
  /** First record sent to the target's attach report (stream, verify, attach, its fidelity run). */
  transferMs: number
  /** The target's share: decoding while receiving, attaching, and its fidelity continuation. */
  targetDecodeMs: number
  targetAttachMs: number
  targetFidelityMs: number
  commitMs: number
}

export interface MigrationResult {
  sessionId: string
  peer: string
  outcome: 'migrated' | 'declined'
  estimate: WarmStartEstimate
  quantization: UsxfQuantization | null
  positions: number
  rawBytes: number
  /** USXF bytes sent (records with framing). */
  streamBytes: number
  fidelity: FidelityRecord | null
  timings: MigrationTimings
}

export interface SourceContext {
  libp2p: Libp2p
  identity: Identity
  sessions: SessionTable
  logger: Logger
  readTimeoutMs: number
  attachTimeoutMs: number
  codecBytesPerSecond: number
}

export function quantizationList (q: MigrateOptions['quantization']): UsxfQuantization[] {
  const list = q === undefined ? ['none' as const] : Array.isArray(q) ? q : [q]
  if (list.length === 0 || list.some((x) => !QUANTIZATIONS.includes(x))) throw new UsxfFormatError(`quantization must be among ${QUANTIZATIONS.join(', ')}`)
  return list
}

/**
 * Moves a hosted session to `peer` (the source's stages 1-8). The session is held (busy) for the
 * whole exchange; it is released only after the target confirms the commit, and handed back to its
 * users on any failure. The continuation check runs here while the state streams out.
 */
export async function migrateSession (ctx: SourceContext, sessionId: string, peer: PeerId, options: MigrateOptions = {}): Promise<MigrationResult> {
  const preferences = quantizationList(options.quantization)
  const fidelityTokens = options.fidelityTokens ?? 16
  if (!Number.isInteger(fidelityTokens) || fidelityTokens < 0 || fidelityTokens > 1024) throw new UsxfFormatError('fidelityTokens must be in 0..1024')
  const chunkBytes = Math.min(options.chunkBytes ?? MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)
  const signal = options.signal
  const read = { signal, timeoutMs: ctx.readTimeoutMs }
  const hosted = ctx.sessions.acquire(sessionId)
  const started = performance.now()
  let wire: MigrationWire | null = null
  let committing = false
  // the reference continuation runs on the session itself; on failure it is stopped and awaited
  // before the session goes back to its users
  const referenceControl = new AbortController()
  const referenceSignal = signal !== undefined ? AbortSignal.any([signal, referenceControl.signal]) : referenceControl.signal
  let reference: Promise<unknown> | null = null
  try {
    const { model, session } = hosted
    const manifest = model.manifest
    const spec = manifest.spec
    const positions = sessionPositions(session)
    const rawBytes = positions * spec.numLayers * 2 * spec.numKvHeads * spec.headDim * 4
    const sendBy = (): AbortSignal => AbortSignal.any([AbortSignal.timeout(ctx.readTimeoutMs), ...(signal !== undefined ? [signal] : [])])

    // 1. capability exchange
    wire = await MigrationWire.open(ctx.libp2p, peer, { signal })
    const migrationId = new Uint8Array(randomBytes(16))
    await wire.sendControl({
      offer: {
        migrationId,
        sessionId,
        model: { configSha256: fromHex(manifest.configSha256, 32, 'config hash') as Uint8Array<ArrayBuffer>, weightsSha256: fromHex(manifest.weightsSha256, 32, 'weights hash') as Uint8Array<ArrayBuffer> },
        layerStart: 0,
        layerEnd: spec.numLayers,
        seqLen: positions,
        rawBytes: BigInt(rawBytes),
        quantizations: preferences.map(quantizationCode),
        fidelityTokens
      }
    }, sendBy())
    const capabilities = await wire.expect('capabilities', read)
    const quantization = preferences.find((q) => capabilities.quantizations.includes(quantizationCode(q)))
    if (quantization === undefined) throw new UsxfRefusedError(`the target supports none of ${preferences.join(', ')}`)

    // 2. warm-start decision from the measured link and the target's measured prefill rate
    const size = payloadSize({
      kind: 'kv', layerStart: 0, layerEnd: spec.numLayers, numKvHeads: spec.numKvHeads, headDim: spec.headDim, hiddenSize: spec.hiddenSize, seqLen: positions,
      dtype: 'f32', quantization, quantGroup: options.quantGroup ?? DEFAULT_QUANT_GROUP, blockTokens: options.blockTokens ?? DEFAULT_BLOCK_TOKENS, chunkBytes
    })
    const wireBytes = size.payloadBytes + size.chunkCount * (RECORD_OVERHEAD + 12) + 4096
    const link = await probeLink(wire, wireBytes, read)
    const estimate = estimateWarmStart({
      positions,
      rawBytes,
      wireBytes,
      ...link,
      prefillTokensPerSecond: capabilities.prefillTokensPerSecond,
      codecBytesPerSecond: ctx.codecBytesPerSecond,
      threshold: options.threshold ?? 1,
      forced: options.mode === 'always'
    })
    const negotiateMs = performance.now() - started
    const base = { sessionId, peer: peer.toString(), estimate, positions, rawBytes }
    if (estimate.decision === 'reprefill') {
      await wire.sendControl({ commit: { commit: false, reason: `declined: estimated transfer ${estimate.transferMs.toFixed(0)} ms vs re-prefill ${estimate.reprefillMs.toFixed(0)} ms` } }, sendBy())
      await wire.close(sendBy())
      ctx.sessions.releaseHold(sessionId)
      return { ...base, outcome: 'declined', quantization: null, streamBytes: 0, fidelity: null, timings: { totalMs: performance.now() - started, negotiateMs, transferMs: 0, targetDecodeMs: 0, targetAttachMs: 0, targetFidelityMs: 0, commitMs: 0 } }
    }

    // 3. extract: a zero-copy snapshot of every layer (the session is held, so it does not advance)
    const snapshot = extractKv(session.caches)
    const shareTokens = hosted.shareTokenIds && session.tokens.length === positions
    // 4. normalize: canonical planes (views), the agreed quantization
    const input = kvStateInput(manifest, snapshot, { tokenIds: shareTokens ? session.tokens : null })
    // 5-6. signed transfer, CRC-checked streaming with flow control
    const probeToken = hosted.shareTokenIds && hosted.pendingToken !== null ? hosted.pendingToken : new DataView(migrationId.buffer).getUint32(0, true) % spec.vocabSize
    await wire.sendControl({
      begin: {
        quantization: quantizationCode(quantization),
        hasPendingToken: hosted.shareTokenIds && hosted.pendingToken !== null,
        pendingToken: hosted.shareTokenIds ? hosted.pendingToken ?? 0 : 0,
        probeToken,
        windowBytes: WINDOW_BYTES
      }
    }, sendBy())
    // The reference continuation runs on the source's session meanwhile: the runtime replaces cache
    // arrays rather than writing into them, so the snapshot being sent is unaffected.
    const ownContinuation = greedyContinuation(model, session, probeToken, fidelityTokens, referenceSignal)
    reference = ownContinuation
    ownContinuation.catch(() => {})
    const transferStarted = performance.now()
    const encoder = new UsxfEncoder(input, { signer: ctx.identity, quantization, quantGroup: options.quantGroup, blockTokens: options.blockTokens, chunkBytes, headroom: 1 })
    let sent = 0
    let acknowledged = 0
    let streamBytes = 0
    for await (const record of encoder.records()) {
      if (record[1] === RECORD_CHUNK) {
        while (sent - acknowledged >= WINDOW_BYTES) {
          acknowledged = Number((await wire.expect('credit', read)).bytes)
        }
        sent += record.byteLength - 1 - RECORD_OVERHEAD - 12
      }
      streamBytes += record.byteLength - 1
      await wire.sendRecord(record, sendBy())
    }
    const attached = await wire.expect('attached', { signal, timeoutMs: ctx.attachTimeoutMs }, ['credit'])
    const transferMs = performance.now() - transferStarted

    // 8. two-phase commit, gated by the fidelity check
    const own = await ownContinuation
    const fidelity = compareContinuations(fidelityTokens, own, { tokens: attached.continuation, room: attached.contextRoom }, quantization, quantization !== 'none')
    const acceptDivergence = options.acceptDivergence ?? quantization === 'int8-block'
    const acceptable = fidelity.verdict === 'exact' || fidelity.verdict === 'context-exhausted' || fidelity.verdict === 'unchecked' || (fidelity.verdict === 'lossy-divergence' && acceptDivergence)
    if (!acceptable) {
      const reason = `fidelity ${fidelity.verdict}: ${fidelity.matching} of ${fidelity.compared} continuation tokens matched`
      await wire.sendControl({ commit: { commit: false, reason } }, sendBy())
      await wire.close(sendBy())
      throw Object.assign(new UsxfFidelityError(reason), { fidelity })
    }
    const commitStarted = performance.now()
    committing = true
    await wire.sendControl({ commit: { commit: true, reason: '' } }, sendBy())
    try {
      await wire.expect('committed', read)
    } catch (err) {
      throw new UsxfCommitUnknownError(`session ${sessionId}: the target did not confirm the commit; the source keeps its copy`, { cause: err })
    }
    // The target holds the session now: release ours.
    ctx.sessions.remove(sessionId)
    await wire.close(sendBy()).catch(() => {})
    const commitMs = performance.now() - commitStarted
    ctx.logger.info({ sessionId, peer: peer.toString(), positions, quantization, verdict: fidelity.verdict }, 'session migrated out')
    return {
      ...base,
      outcome: 'migrated',
      quantization,
      streamBytes,
      fidelity,
      timings: { totalMs: performance.now() - started, negotiateMs, transferMs, targetDecodeMs: attached.decodeMs, targetAttachMs: attached.attachMs, targetFidelityMs: attached.fidelityMs, commitMs }
    }
  } catch (err) {
    referenceControl.abort()
    await reference?.catch(() => {})
    ctx.sessions.releaseHold(sessionId)
    if (wire !== null && !committing) {
      await wire.sendError(err, AbortSignal.timeout(5000)).catch(() => {})
    }
    wire?.abort(err as Error)
    throw err
  }
}
