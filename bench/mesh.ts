// Split-inference benchmark: 1 client + 3 layer servers (+ 1 spare) as in-process nodes on
// loopback TCP (noise, yamux), tiny and 1B-shaped synthetic models. Measures decode tok/s of the
// mesh chain beside LocalModel (same model, same process run) for f16 and f32 activations; per
// hop the client's round trip of a decode step, the server's compute_ms and the overhead between
// them; bytes per token per hop (activation frame, protobuf message, and on the wire as the
// sockets count it) beside hidden_size x 2; N concurrent sessions against the slowest stage's
// throughput bound; recovery from a killed middle server beside re-prefilling its span; and
// injected link latency through a TCP delay proxy, expected vs measured tok/s. The concurrent run
// and the recovery run each compare the old path with the new one in the same run: the client's
// head and tail in its thread vs on worker threads (MeshModel `offload`), a failover that dials
// the spare vs one into a standby session opened beforehand (MeshModel `standby`).
// Usage: node bench/mesh.ts [--json] [--shapes tiny,llama-1b] [--tokens tiny:64,llama-1b:16]
//        [--prompt 32] [--sessions 4] [--latencies 5,20] [--activations f16,none] [--threads 1]
//        [--variant int8] [--servers threads|main] [--offload on|off]
// All nodes share this machine (and its cores); onnxruntime runs 1 thread per stage by default.
// The servers run on a worker thread each (--servers threads, default): onnxruntime-node runs a
// session synchronously on the calling thread, so on one thread the stages could not overlap;
// --servers main puts them on the client's event loop instead.
// Synthetic models are cached under os.tmpdir() (the 1B checkpoint is shared with bench/usxf.ts).
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalModel, type GenerateRequest, type GenerateResult, type RunnerCache, type StageInput, type StageRunner } from '../src/inference/index.ts'
import { loadManifest, type ModelManifest, type SynthShape } from '../src/model/index.ts'
import { createPermagent, type Permagent } from '../src/permagent.ts'
import type { PeerId } from '@libp2p/interface'
import { createLayerServer, MeshModel, type LayerServer, type MeshGenerateResult, type MeshHop } from '../src/split/index.ts'
import { decodeActivationFrame, encodeActivationFrame, type UsxfQuantization } from '../src/usxf/index.ts'
import { benchFlags, intList, progress, report, summarize, type Cell } from './lib/index.ts'
import { startDelayProxy, type DelayProxy } from './lib/delay-proxy.ts'
import { busyEchoOverheadMs, handleBusyEcho, handleEcho, handleOffloadedEcho, libp2pEchoMs, OFFLOADED_ECHO_PROTOCOL, startTcpEcho, tcpEchoMs } from './lib/echo.ts'
import { startLayerServerThread } from './lib/layer-server-thread.ts'
import { watchHops, type HopExchange } from './lib/hop-probe.ts'
import { watchSockets, type SocketSnapshot } from './lib/socket-bytes.ts'
import { syntheticModel, type WeightVariant } from './lib/synthetic.ts'

const flags = benchFlags({
  shapes: { default: 'tiny,llama-1b', description: 'synthetic model shapes' },
  tokens: { default: 'tiny:64,llama-1b:16', description: 'decode tokens per generation: N for every shape, or shape:N,...' },
  prompt: { default: '32', description: 'prompt tokens per generation' },
  sessions: { default: '4', description: 'concurrent sessions in the throughput run' },
  latencies: { default: '5,20', description: 'injected one-way link latencies, ms (0 or empty: skip)' },
  activations: { default: 'f16,none', description: 'activation quantizations compared with the local model (none = f32)' },
  variant: { default: 'int8', description: 'weights of the imported model: f32, f16 or int8' },
  threads: { default: '1', description: 'onnxruntime threads per stage (the local model uses the same)' },
  servers: { default: 'threads', description: 'where the layer servers run: threads (a worker thread each) or main (the client\'s event loop)' },
  offload: { default: 'on', description: 'the client\'s head and tail on worker threads (on) or its own thread (off) in the single-session, latency and recovery runs (the concurrent run measures both)' }
})
const offload = (flags.values.offload ?? 'on') === 'on'
if (!['on', 'off'].includes(flags.values.offload ?? 'on')) throw new Error('--offload is on or off')
const serversOn = flags.values.servers ?? 'threads'
if (serversOn !== 'threads' && serversOn !== 'main') throw new Error('--servers is threads or main')
const shapes = (flags.values.shapes ?? '').split(',').filter((s) => s !== '') as SynthShape[]
const promptLength = intList(flags.values.prompt, [32])[0]
const sessionCount = intList(flags.values.sessions, [4])[0]
const latencies = (flags.values.latencies ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== '0').map(Number)
for (const l of latencies) if (!(l > 0 && l <= 1000)) throw new Error(`latency ${l} ms is outside 0-1000`)
const activations = (flags.values.activations ?? '').split(',').filter((s) => s !== '') as UsxfQuantization[]
for (const q of activations) if (!['none', 'f16', 'int8-block'].includes(q)) throw new Error(`unknown activation quantization ${q}`)
const variant = (flags.values.variant ?? 'int8') as WeightVariant
if (!['f32', 'f16', 'int8'].includes(variant)) throw new Error(`unknown weight variant ${variant}`)
const threads = intList(flags.values.threads, [1])[0]
const tokensFor = (shape: string): number => {
  const text = flags.values.tokens ?? ''
  const entry = text.split(',').map((s) => s.split(':')).find(([name]) => name === shape)
  const n = /^\d+$/.test(text) ? Number(text) : entry !== undefined ? Number(entry[1]) : 16
  if (!Number.isInteger(n) || n < 2) throw new Error(`--tokens for ${shape} must be an integer >= 2`)
  return n
}
const HOPS = 3
const TARGET_OVERHEAD_MS = 1
const TARGET_BYTES_FACTOR = 1.05
const TARGET_HEADER_BYTES = 128
const TARGET_CONCURRENT = 0.8
const TARGET_RECOVERY = 2

/** The tiny shape has 4 layers; head + 3 one-layer spans + tail needs 5. The 1B shape is bench/usxf.ts's checkpoint. */
async function prepare (shape: SynthShape): Promise<{ dataDir: string, name: string }> {
  if (shape === 'tiny') return await syntheticModel({ cacheRoot: join(tmpdir(), 'permagent-bench-mesh'), shape, variant, entry: 'tiny-5layers-seed1', config: { num_hidden_layers: 5 } })
  return await syntheticModel({ cacheRoot: join(tmpdir(), 'permagent-bench-usxf'), shape, variant })
}

/** The middle layers [1, layers - 1) cut into HOPS spans, the larger ones first. */
function middleSpans (layers: number): Array<{ start: number, end: number }> {
  const middle = layers - 2
  if (middle < HOPS) throw new Error(`a ${layers}-layer model has no room for ${HOPS} one-layer spans between head and tail`)
  const spans: Array<{ start: number, end: number }> = []
  let at = 1
  for (let i = 0; i < HOPS; i++) {
    const size = Math.floor(middle / HOPS) + (i < middle % HOPS ? 1 : 0)
    spans.push({ start: at, end: at + size })
    at += size
  }
  return spans
}

function promptIds (manifest: ModelManifest, seed: number): number[] {
  const vocab = manifest.spec.vocabSize
  return Array.from({ length: promptLength }, (_, i) => 3 + ((i * 7919 + seed * 104729) % (vocab - 3)))
}

function tcpPort (node: Permagent): number {
  for (const address of node.mesh.addresses()) {
    const match = /^\/ip4\/127\.0\.0\.1\/tcp\/(\d+)/.exec(address)
    if (match !== null) return Number(match[1])
  }
  throw new Error('the node has no loopback TCP address')
}

interface Timed {
  result: GenerateResult | MeshGenerateResult
  /** performance.now() at each token (the first comes right after the prefill). */
  tokenTimes: number[]
  decodeMs: number
  tokPerS: number
}

/** Greedy generation without stop tokens (a synthetic model's eos would end it early), timed per token. */
async function timedGenerate (model: { generate: (r: GenerateRequest) => Promise<GenerateResult> }, prompt: number[], maxTokens: number, onToken?: (index: number, at: number) => void): Promise<Timed> {
  const tokenTimes: number[] = []
  const result = await model.generate({
    promptIds: prompt,
    maxTokens,
    stopTokens: [],
    onToken: (event) => { const at = performance.now(); tokenTimes.push(at); onToken?.(event.index, at) }
  })
  const decodeMs = tokenTimes[tokenTimes.length - 1] - tokenTimes[0]
  return { result, tokenTimes, decodeMs, tokPerS: (tokenTimes.length - 1) / (decodeMs / 1000) }
}

/** Times every one-row run of a stage (decode steps) into `samples` (on a worker: the round trip to it). */
function timeStage (stage: StageRunner, hidden: number, samples: number[]): void {
  const run = stage.run.bind(stage)
  stage.run = async (input: StageInput, cache: RunnerCache, options?: { transferInput?: boolean }) => {
    const rows = input.tokens?.length ?? (input.hidden !== undefined ? input.hidden.length / hidden : 1)
    const started = performance.now()
    const out = await run(input, cache, options)
    if (rows === 1) samples.push(performance.now() - started)
    return out
  }
}

/** Client-side cost of one hop's decode step: encode the request frame + decode the reply (median of many). */
function clientCodecMs (hidden: number, quantization: UsxfQuantization): { encodeMs: number, decodeMs: number } {
  const values = Float32Array.from({ length: hidden }, (_, i) => Math.sin(i) * 3)
  const frame = encodeActivationFrame({ step: 1, positionStart: 40, rows: 1, width: hidden, values }, { quantization })
  const encode: number[] = []
  const decode: number[] = []
  for (let i = 0; i < 2000; i++) {
    let t = performance.now()
    encodeActivationFrame({ step: i, positionStart: 40, rows: 1, width: hidden, values }, { quantization })
    encode.push(performance.now() - t)
    t = performance.now()
    decodeActivationFrame(frame, { width: hidden, maxRows: 1 })
    decode.push(performance.now() - t)
  }
  return { encodeMs: summarize(encode).p50, decodeMs: summarize(decode).p50 }
}

interface HopStats {
  hop: number
  layers: number
  steps: number
  rttP50: number
  computeP50: number
  overheadP50: number
  overheadP90: number
  /** Servers on this thread only: time in the server around compute (request decode, frame codec, reply encode), and the rest of the round trip. */
  serverWorkP50: number | null
  transportP50: number | null
  requestFrameBytes: number
  responseFrameBytes: number
  requestMessageBytes: number
  responseMessageBytes: number
  /** Socket bytes per decode token: over the whole decode window (background included), and around each step's exchange only. */
  rawWireUpPerToken: number
  rawWireDownPerToken: number
  wireUpPerToken: number
  wireDownPerToken: number
}

interface ChainRun {
  quantization: UsxfQuantization
  tokPerS: number
  msPerToken: number
  sameTokensAsLocal: boolean
  hops: HopStats[]
  codec: { encodeMs: number, decodeMs: number }
  headMsP50: number
  tailMsP50: number
  /** Event-loop utilization of the process (all nodes) during the decode. */
  eventLoop: number
  otherMs: number
  /** Round trip p50 of a step-sized message echoed over libp2p / bare TCP to server 1's thread. */
  echoLibp2pMs: number
  echoTcpMs: number
  /** The libp2p echo's round trip less a server-side block as long as hop 1's compute (the overhead of an echo that computes). */
  echoAfterComputeMs: number
  /** The same with the block on a thread the server waits for (its event loop free meanwhile). */
  echoOffloadedMs: number
}

interface ShapeResult {
  shape: string
  layers: number
  hidden: number
  spans: Array<{ start: number, end: number }>
  promptTokens: number
  decodeTokens: number
  /** The faster of a run before the mesh chains and one after them. */
  local: { tokPerS: number, msPerToken: number, runsTokPerS: number[] }
  chains: ChainRun[]
  backgroundBytesPerSecond: number
  concurrent: Array<{ offload: boolean, sessions: number, aggregateTokPerS: number, wallTokPerS: number, slowestStage: string, slowestStageMs: number, boundTokPerS: number, ratio: number, cpuBoundTokPerS: number, eventLoop: number, stageMs: Record<string, number>, sameTokensAsSequential: boolean }>
  latency: Array<{ oneWayMs: number, viaProxy: boolean, expectedTokPerS: number, measuredTokPerS: number, expectedMsPerToken: number, measuredMsPerToken: number, rttP50: number[] }>
  recovery: Array<{ standby: boolean, viaStandby: boolean, positions: number, normalStepMs: number, interruptedStepMs: number, extraMs: number, reprefillMs: number, replayRows: number, replayRttMs: number, ratio: number, failovers: number, untilFailMs: number | null, untilOpenMs: number | null, openRttMs: number | null, openToReplayMs: number | null }>
}

const sockets = watchSockets()

/** The remote TCP ports of a peer's connections from `libp2p` (dialed: its listen port; accepted: its ephemeral one), and `listenPort`. */
function peerPorts (libp2p: Permagent['mesh']['libp2p'], peer: PeerId, listenPort: number): number[] {
  const ports = new Set([listenPort])
  for (const connection of libp2p.getConnections(peer)) {
    const match = /\/tcp\/(\d+)/.exec(connection.remoteAddr.toString())
    if (match !== null) ports.add(Number(match[1]))
  }
  return [...ports]
}
// the peers the probe watches: the layer servers of the shape being run
let serverPeers = new Set<string>()
// and the clients (servers on this thread report how long they held each step)
const clientPeers = new Set<string>()
// the client whose connections the wire meter counts, and the servers' listen ports
let meteredClient: Permagent | null = null
const listenPorts = new Map<string, { peerId: PeerId, port: number }>()
const probe = watchHops(() => serverPeers, () => clientPeers, (peer) => {
  const server = listenPorts.get(peer)
  if (meteredClient === null || server === undefined) return { written: 0, read: 0 }
  return sockets.bytes(...peerPorts(meteredClient.mesh.libp2p, server.peerId, server.port))
})

/** A layer server as the client sees it, on a worker thread (default) or on this thread. */
interface ServerHandle {
  peerId: PeerId
  address: string
  port: number
  echoPort: number
  stop: () => Promise<void>
  /** After its connections were cut: it goes away (a step in flight finishes, its reply goes nowhere). */
  kill: () => Promise<void>
}

async function startServer (dir: string, index: number, dataDir: string, model: string, layers: { start: number, end: number }, maxLength: number): Promise<ServerHandle> {
  const nodeDir = join(dir, `server-${index}`)
  if (serversOn === 'threads') {
    const thread = await startLayerServerThread({ nodeDir, modelDataDir: dataDir, model, layers, threads, maxLength })
    // not worker.terminate(): ending the thread inside an onnxruntime run aborts the process
    // (Napi::Error); the client's side of its connections is cut first, which is the crash it sees
    return { ...thread, kill: thread.stop }
  }
  const node = await createPermagent({ dataDir: nodeDir, network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, targetPeers: 0 } })
  await node.start()
  const server = createLayerServer({ libp2p: node.mesh.libp2p, dataDir, model, layers, threads, limits: { maxLength } })
  await server.start()
  await handleEcho(node.mesh.libp2p)
  await handleBusyEcho(node.mesh.libp2p)
  const stopSpinner = await handleOffloadedEcho(node.mesh.libp2p)
  const echo = await startTcpEcho()
  const address = node.mesh.addresses()[0]
  const port = tcpPort(node)
  let stopped = false
  const stop = async (): Promise<void> => { if (stopped) return; stopped = true; await server.stop(); await node.stop(); echo.server.close(); await stopSpinner() }
  return { peerId: node.mesh.peerId, address, port, echoPort: echo.port, stop, kill: async () => { await stop() } }
}

async function clientNode (dir: string, name: string): Promise<Permagent> {
  const node = await createPermagent({ dataDir: join(dir, name), network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, targetPeers: 0 } })
  await node.start()
  clientPeers.add(node.mesh.peerId.toString())
  return node
}

async function benchShape (shape: SynthShape): Promise<ShapeResult> {
  const { dataDir, name } = await prepare(shape)
  const manifest = await loadManifest(dataDir, name)
  const layers = manifest.spec.numLayers
  const hidden = manifest.spec.hiddenSize
  const spans = middleSpans(layers)
  const decodeTokens = tokensFor(shape)
  const maxContext = promptLength + decodeTokens + 8
  const dir = await mkdtemp(join(tmpdir(), 'permagent-bench-mesh-nodes-'))
  const clients: Permagent[] = []
  const servers: ServerHandle[] = []
  const models: Array<{ close: () => Promise<void> }> = []
  try {
    // the local model runs before the mesh chains and again after them: the machine is shared, so
    // the comparison uses the faster of the two
    progress(`${shape}: local model (${layers} layers, hidden ${hidden}, ${threads} thread(s))`)
    const local = await LocalModel.open({ dataDir, name, threads, maxContext, spinning: false })
    models.push(local)
    await timedGenerate(local, promptIds(manifest, 9), 4)
    const localRuns = [await timedGenerate(local, promptIds(manifest, 1), decodeTokens)]
    const localTokens = localRuns[0].result.tokens

    // servers 0-2 run the three spans; server 3 is a spare for the middle span
    const client = await clientNode(dir, 'client')
    clients.push(client)
    const spanOf = (i: number): { start: number, end: number } => i < HOPS ? spans[i] : spans[1]
    for (let i = 0; i <= HOPS; i++) {
      progress(`${shape}: layer server ${i + 1} on layers ${spanOf(i).start}-${spanOf(i).end} (${serversOn === 'threads' ? 'worker thread' : 'main thread'})`)
      servers.push(await startServer(dir, i, dataDir, name, spanOf(i), maxContext))
    }
    const spare = servers[HOPS]
    serverPeers = new Set(servers.map((s) => s.peerId.toString()))
    for (const server of servers) listenPorts.set(server.peerId.toString(), { peerId: server.peerId, port: server.port })
    meteredClient = client
    for (const server of servers) await client.mesh.connect(server.address)
    const chain = (hopPeers: ServerHandle[][]): MeshHop[] => spans.map((span, i) => ({ ...span, peers: hopPeers[i].map((s) => s.peerId) }))
    const primary = chain([[servers[0]], [servers[1]], [servers[2]]])
    const ports = servers.slice(0, HOPS).map((s) => s.port)

    // what the connections carry when idle (identify, ping, DHT), to read the wire counts against
    const hopPorts = (): number[][] => servers.slice(0, HOPS).map((server) => peerPorts(client.mesh.libp2p, server.peerId, server.port))
    const idleStart = sockets.snapshot()
    const idleMs = 2000
    await new Promise((resolve) => setTimeout(resolve, idleMs))
    // per connection, both ways (the raw decode-window counts include it)
    const idle = hopPorts().map((p) => sockets.since(idleStart, p))
    const backgroundBytesPerSecond = idle.reduce((a, b) => a + b.written + b.read, 0) / HOPS / (idleMs / 1000)

    const chains: ChainRun[] = []
    let f16Model: MeshModel | null = null
    const stageSamples = { head: [] as number[], tail: [] as number[] }
    for (const quantization of activations) {
      progress(`${shape}: mesh chain, ${quantization} activations`)
      const model = await MeshModel.open({ libp2p: client.mesh.libp2p, dataDir, name, headLayers: 1, tailLayers: 1, chain: primary, quantization, maxContext, threads, offload })
      models.push(model)
      const head: number[] = []
      const tail: number[] = []
      timeStage(model.head, hidden, head)
      timeStage(model.tail, hidden, tail)
      await timedGenerate(model, promptIds(manifest, 9), 4)
      // the spare serves the middle span in the recovery run: warm its stage the same way
      if (quantization === activations[0]) {
        const warm = await MeshModel.open({ libp2p: client.mesh.libp2p, dataDir, name, headLayers: 1, tailLayers: 1, chain: chain([[servers[0]], [spare], [servers[2]]]), quantization, maxContext, threads })
        await timedGenerate(warm, promptIds(manifest, 8), 4)
        await warm.close()
      }
      head.length = 0
      tail.length = 0
      probe.clear()
      const window: Array<{ snapshot: SocketSnapshot, ports: number[][] }> = []
      const last = decodeTokens - 1
      const elu = performance.eventLoopUtilization()
      const run = await timedGenerate(model, promptIds(manifest, 1), decodeTokens, (index) => {
        // decode steps run between the first token and the last one
        if (index === 0 || index === last) window.push({ snapshot: sockets.snapshot(), ports: hopPorts() })
      })
      const eventLoop = performance.eventLoopUtilization(elu).utilization
      const steps = decodeTokens - 1
      const exchanges = probe.exchanges.filter((e) => e.kind === 'step' && e.rows === 1 && e.sentAt >= run.tokenTimes[0])
      // servers on this thread: each step's time inside the server (read to reply) splits the overhead
      // into the server's own work around compute and the transport (both ways, both stacks)
      const allSteps = probe.exchanges.filter((e) => e.kind === 'step')
      const handling = new Map<HopExchange, number>()
      if (probe.handled.length === allSteps.length) allSteps.forEach((e, i) => { if (probe.handled[i].rows === e.rows) handling.set(e, probe.handled[i].handlingMs) })
      const codec = clientCodecMs(hidden, quantization)
      const hops: HopStats[] = spans.map((span, i) => {
        const mine = exchanges.filter((e) => e.peer === servers[i].peerId.toString())
        const overhead = mine.map((e) => e.rttMs - (e.computeMs ?? 0))
        // every connection to the server during the window (one, unless it was re-dialed)
        const wire = sockets.since(window[0].snapshot, [...new Set([...window[0].ports[i], ...window[1].ports[i]])])
        return {
          hop: i,
          layers: span.end - span.start,
          steps: mine.length,
          rttP50: summarize(mine.map((e) => e.rttMs)).p50,
          computeP50: summarize(mine.map((e) => e.computeMs ?? 0)).p50,
          overheadP50: summarize(overhead).p50,
          overheadP90: summarize(overhead).p90,
          serverWorkP50: handling.size > 0 ? summarize(mine.map((e) => (handling.get(e) ?? NaN) - (e.computeMs ?? 0)).filter(Number.isFinite)).p50 : null,
          transportP50: handling.size > 0 ? summarize(mine.map((e) => e.rttMs - (handling.get(e) ?? NaN)).filter(Number.isFinite)).p50 : null,
          requestFrameBytes: mine[0]?.requestFrameBytes ?? 0,
          responseFrameBytes: mine[0]?.responseFrameBytes ?? 0,
          requestMessageBytes: mine[0]?.requestBytes ?? 0,
          responseMessageBytes: mine[0]?.responseBytes ?? 0,
          rawWireUpPerToken: wire.written / steps,
          rawWireDownPerToken: wire.read / steps,
          // counted around each step alone, so little of the background falls in
          wireUpPerToken: summarize(mine.map((e) => e.wireUp ?? NaN)).mean,
          wireDownPerToken: summarize(mine.map((e) => e.wireDown ?? NaN)).mean
        }
      })
      // the transport floors for a message of the step's size, to the same thread as server 1
      const echoBytes = hops[0].requestMessageBytes
      const echoLibp2p = await libp2pEchoMs(client.mesh.libp2p, servers[0].peerId, echoBytes)
      const echoTcp = await tcpEchoMs(servers[0].echoPort, echoBytes)
      // the same echo with the server's thread blocked for hop 1's compute first (no model, no protocol)
      const echoAfterCompute = await busyEchoOverheadMs(client.mesh.libp2p, servers[0].peerId, echoBytes, hops[0].computeP50)
      // and with that block on another thread the server waits for (compute off its event loop)
      const echoOffloaded = await busyEchoOverheadMs(client.mesh.libp2p, servers[0].peerId, echoBytes, hops[0].computeP50, 20, OFFLOADED_ECHO_PROTOCOL)
      chains.push({
        quantization,
        tokPerS: run.tokPerS,
        msPerToken: run.decodeMs / steps,
        sameTokensAsLocal: run.result.tokens.every((t, i) => t === localTokens[i]),
        hops,
        codec,
        headMsP50: summarize(head).p50,
        tailMsP50: summarize(tail).p50,
        eventLoop,
        echoLibp2pMs: echoLibp2p,
        echoTcpMs: echoTcp,
        echoAfterComputeMs: echoAfterCompute,
        echoOffloadedMs: echoOffloaded,
        // per token, what the client spends outside its stages, the hops' round trips and the frame codec
        otherMs: run.decodeMs / steps - summarize(head).p50 - summarize(tail).p50 - hops.reduce((a, h) => a + h.rttP50, 0) - HOPS * (codec.encodeMs + codec.decodeMs)
      })
      if (quantization === 'f16') { f16Model = model; stageSamples.head = head; stageSamples.tail = tail } else await model.close()
    }
    const reference = chains.find((c) => c.quantization === 'f16') ?? chains[0]
    progress(`${shape}: local model again`)
    localRuns.push(await timedGenerate(local, promptIds(manifest, 1), decodeTokens))
    const localRun = localRuns[0].tokPerS >= localRuns[1].tokPerS ? localRuns[0] : localRuns[1]

    // concurrent sessions on the f16 chain, against the slowest stage's bound measured above: the
    // client's head and tail on its thread (the old path) and on worker threads (offload)
    const concurrent: ShapeResult['concurrent'] = []
    if (f16Model !== null && sessionCount > 1) {
      const other = await MeshModel.open({ libp2p: client.mesh.libp2p, dataDir, name, headLayers: 1, tailLayers: 1, chain: primary, quantization: 'f16', maxContext, threads, offload: !offload })
      models.push(other)
      for (const model of offload ? [other, f16Model] : [f16Model, other]) {
        const offload = model.offload
        const mode = offload ? 'head/tail offloaded' : 'head/tail in the client thread'
        progress(`${shape}: ${sessionCount} concurrent sessions, ${mode}`)
        // this model's own head and tail step times (one session alone), and its sequential outputs
        const head: number[] = []
        const tail: number[] = []
        timeStage(model.head, hidden, head)
        timeStage(model.tail, hidden, tail)
        await timedGenerate(model, promptIds(manifest, 9), 4)
        head.length = 0
        tail.length = 0
        const sequential: number[][] = []
        for (let s = 0; s < sessionCount; s++) sequential.push((await timedGenerate(model, promptIds(manifest, 20 + s), decodeTokens)).result.tokens)
        const headMs = summarize(head).p50
        const tailMs = summarize(tail).p50
        const elu = performance.eventLoopUtilization()
        const runs = await Promise.all(Array.from({ length: sessionCount }, async (_, s) => await timedGenerate(model, promptIds(manifest, 20 + s), decodeTokens)))
        const eventLoop = performance.eventLoopUtilization(elu).utilization
        const from = Math.max(...runs.map((r) => r.tokenTimes[0]))
        const to = Math.min(...runs.map((r) => r.tokenTimes[r.tokenTimes.length - 1]))
        const inWindow = runs.reduce((n, r) => n + r.tokenTimes.filter((t) => t > from && t <= to).length, 0)
        const wallFrom = Math.min(...runs.map((r) => r.tokenTimes[0]))
        const wallTo = Math.max(...runs.map((r) => r.tokenTimes[r.tokenTimes.length - 1]))
        // in the client's thread onnxruntime-node runs head and tail on one thread, so they take
        // turns: together they are one stage; offloaded, each has a worker thread of its own
        const stageMs: Record<string, number> = offload ? { 'client head (worker)': headMs, 'client tail (worker)': tailMs } : { 'client head+tail': headMs + tailMs }
        reference.hops.forEach((h, i) => { stageMs[`server ${i + 1} (${h.layers} layers)`] = h.computeP50 })
        const [slowestStage, slowestStageMs] = Object.entries(stageMs).sort((a, b) => b[1] - a[1])[0]
        const totalMs = Object.values(stageMs).reduce((a, b) => a + b, 0)
        const aggregateTokPerS = to > from ? inWindow / ((to - from) / 1000) : runs.reduce((n, r) => n + r.tokenTimes.length - 1, 0) / ((wallTo - wallFrom) / 1000)
        const boundTokPerS = 1000 / slowestStageMs
        concurrent.push({
          offload,
          sessions: sessionCount,
          aggregateTokPerS,
          wallTokPerS: runs.reduce((n, r) => n + r.tokenTimes.length - 1, 0) / ((wallTo - wallFrom) / 1000),
          slowestStage,
          slowestStageMs,
          boundTokPerS,
          ratio: aggregateTokPerS / boundTokPerS,
          cpuBoundTokPerS: cpus().length * 1000 / totalMs,
          eventLoop,
          stageMs,
          sameTokensAsSequential: runs.every((r, i) => r.result.tokens.length === sequential[i].length && r.result.tokens.every((t, j) => t === sequential[i][j]))
        })
      }
    }

    // injected latency: a second client reaches each server only through a delay proxy (a fresh
    // node, so no direct connection to a server exists for its streams to take instead)
    const latency: ShapeResult['latency'] = []
    for (const oneWayMs of latencies) {
      progress(`${shape}: ${oneWayMs} ms one-way link latency`)
      const proxies: DelayProxy[] = []
      const far = await clientNode(dir, `client-${oneWayMs}ms`)
      clients.push(far)
      try {
        for (let i = 0; i < HOPS; i++) {
          const proxy = await startDelayProxy(ports[i], oneWayMs)
          proxies.push(proxy)
          await far.mesh.connect(`/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${servers[i].peerId.toString()}`)
        }
        const model = await MeshModel.open({ libp2p: far.mesh.libp2p, dataDir, name, headLayers: 1, tailLayers: 1, chain: primary, quantization: reference.quantization, maxContext, threads, offload })
        models.push(model)
        await timedGenerate(model, promptIds(manifest, 9), 2)
        const before = sockets.snapshot()
        probe.clear()
        const run = await timedGenerate(model, promptIds(manifest, 1), decodeTokens)
        // every decode step of every hop went through its proxy (else the run measured no latency)
        const viaProxy = proxies.every((p, i) => {
          // (not the server's listen port itself: the proxy's own sockets to the server use it)
          const direct = peerPorts(far.mesh.libp2p, servers[i].peerId, p.port).filter((port) => port !== p.port)
          return sockets.since(before, [p.port]).written >= (decodeTokens - 1) * hidden && sockets.since(before, direct).written < (decodeTokens - 1) * hidden
        })
        if (!viaProxy) {
          progress(`${shape}: some steps bypassed the delay proxies`)
          for (const server of servers) progress(`  ${server.port}: ${far.mesh.libp2p.getConnections(server.peerId).map((c) => `${c.direction} ${c.remoteAddr.toString()}`).join(' | ')}`)
        }
        const expectedMsPerToken = reference.msPerToken + HOPS * 2 * oneWayMs
        const rtts = servers.slice(0, HOPS).map((server) => summarize(probe.exchanges.filter((e) => e.kind === 'step' && e.rows === 1 && e.peer === server.peerId.toString()).map((e) => e.rttMs)).p50)
        latency.push({ oneWayMs, viaProxy, expectedMsPerToken, measuredMsPerToken: run.decodeMs / (decodeTokens - 1), expectedTokPerS: 1000 / expectedMsPerToken, measuredTokPerS: run.tokPerS, rttP50: rtts })
        await model.close()
      } finally {
        await far.stop()
        for (const proxy of proxies) await proxy.close()
      }
    }

    // recovery: the middle server dies while a decode step is in flight; the spare takes its span,
    // dialled at failure time (the old path) or as the standby opened beforehand
    const recovery: ShapeResult['recovery'] = []
    const victim = servers[1]
    for (const standby of [false, true]) {
      progress(`${shape}: recovery from a killed middle server${standby ? ', standby on the spare' : ''}`)
      const victimPeer = victim.peerId.toString()
      const sparePeer = spare.peerId.toString()
      const model = await MeshModel.open({ libp2p: client.mesh.libp2p, dataDir, name, headLayers: 1, tailLayers: 1, chain: chain([[servers[0]], [victim, spare], [servers[2]]]), quantization: reference.quantization, maxContext, threads, standby, offload })
      models.push(model)
      await timedGenerate(model, promptIds(manifest, 9), 2)
      probe.clear()
      const killAfter = Math.floor(decodeTokens / 2)
      let armed = false
      let killedAt = 0
      probe.onSent = (peer, kind, rows) => {
        if (!armed || peer !== victimPeer || kind !== 'step' || rows !== 1) return
        armed = false
        killedAt = performance.now()
        // its connections drop with the step in flight, as in a crash; the node itself is stopped
        // after the runs, so its shutdown does not take CPU from the recovery (a crashed machine
        // takes none)
        for (const port of peerPorts(client.mesh.libp2p, victim.peerId, victim.port)) sockets.destroy(port)
      }
      const run = await timedGenerate(model, promptIds(manifest, 1), decodeTokens, (index) => { if (index === killAfter) armed = true })
      probe.onSent = null
      await model.close()
      const result = run.result as MeshGenerateResult
      const intervals = run.tokenTimes.slice(1).map((t, i) => ({ ms: t - run.tokenTimes[i], from: run.tokenTimes[i], to: t }))
      const hit = intervals.findIndex((iv) => killedAt > iv.from && killedAt <= iv.to)
      const replay: HopExchange | undefined = probe.exchanges.find((e) => e.peer === sparePeer && e.kind === 'step' && e.rows > 1 && e.sentAt >= killedAt)
      const opened = probe.exchanges.find((e) => e.peer === sparePeer && e.kind === 'open' && e.sentAt >= killedAt)
      const failed = probe.failures.find((f) => f.peer === victimPeer && f.at >= killedAt)
      if (hit >= 0 && replay !== undefined) {
        const normal = summarize(intervals.filter((_, i) => i !== hit).map((iv) => iv.ms)).p50
        const interrupted = intervals[hit].ms
        recovery.push({
          standby,
          viaStandby: result.failovers.some((f) => f.standby),
          positions: replay.rows - 1,
          normalStepMs: normal,
          interruptedStepMs: interrupted,
          extraMs: interrupted - normal,
          reprefillMs: replay.computeMs ?? 0,
          replayRows: replay.rows,
          replayRttMs: replay.rttMs,
          ratio: (interrupted - normal) / (replay.computeMs ?? 0),
          failovers: result.failovers.length,
          // where the extra time went: noticing the loss and opening a stream to the spare, its session open, the replay
          untilFailMs: failed !== undefined ? failed.at - killedAt : null,
          untilOpenMs: opened !== undefined ? opened.sentAt - killedAt : null,
          openRttMs: opened?.rttMs ?? null,
          openToReplayMs: opened !== undefined ? replay.sentAt - (opened.sentAt + opened.rttMs) : (failed !== undefined ? replay.sentAt - failed.at : null)
        })
      } else {
        progress(`${shape}: the kill did not land in a decode step (failovers: ${result.failovers.length})`)
      }
    }
    await victim.kill()

    return {
      shape,
      layers,
      hidden,
      spans,
      promptTokens: promptLength,
      decodeTokens,
      local: { tokPerS: localRun.tokPerS, msPerToken: localRun.decodeMs / (decodeTokens - 1), runsTokPerS: localRuns.map((r) => r.tokPerS) },
      chains,
      backgroundBytesPerSecond,
      concurrent,
      latency,
      recovery
    }
  } finally {
    for (const model of models) await model.close().catch(() => {})
    for (const server of servers) await server.stop().catch(() => {})
    for (const node of clients) await node.stop().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  }
}

const loadBefore = loadavg()[0]
const results: ShapeResult[] = []
for (const shape of shapes) results.push(await benchShape(shape))
const loadAfter = loadavg()[0]
probe.stop()
sockets.stop()

const met = (ok: boolean | null): string => ok === null ? 'not run' : ok ? 'met' : 'missed'
const concurrentMet = (offload: boolean): boolean | null => { const rows = results.flatMap((r) => r.concurrent.filter((c) => c.offload === offload)); return rows.length === 0 ? null : rows.every((c) => c.ratio >= TARGET_CONCURRENT) }
const recoveryMet = (standby: boolean): boolean | null => { const rows = results.flatMap((r) => r.recovery.filter((c) => c.standby === standby)); return rows.length === 0 ? null : rows.every((c) => c.ratio <= TARGET_RECOVERY) }
const bytesLimit = (hidden: number): number => TARGET_BYTES_FACTOR * hidden * 2 + TARGET_HEADER_BYTES
const hopRows: Cell[][] = []
const bytesRows: Cell[][] = []
for (const r of results) {
  for (const c of r.chains) {
    for (const h of c.hops) {
      const codecMs = c.codec.encodeMs + c.codec.decodeMs
      hopRows.push([r.shape, c.quantization, h.hop + 1, h.layers, h.rttP50, h.computeP50, h.overheadP50, h.overheadP90, h.serverWorkP50, h.transportP50, codecMs, codecMs / (h.overheadP50 + codecMs), h.overheadP50 + codecMs, c.echoLibp2pMs, c.echoAfterComputeMs, c.echoOffloadedMs, c.echoTcpMs, met(h.overheadP50 + codecMs <= TARGET_OVERHEAD_MS)])
      const limit = c.quantization === 'f16' ? bytesLimit(r.hidden) : null
      bytesRows.push([r.shape, c.quantization, h.hop + 1, r.hidden * 2, h.requestFrameBytes, h.requestMessageBytes, h.rawWireUpPerToken, h.rawWireDownPerToken, h.wireUpPerToken, h.wireDownPerToken, limit, limit === null ? 'n/a (f32)' : met(Math.max(h.wireUpPerToken, h.wireDownPerToken) <= limit)])
    }
  }
}
const overheadTarget = results.flatMap((r) => r.chains.filter((c) => c.quantization === 'f16').flatMap((c) => c.hops.map((h) => h.overheadP50 + c.codec.encodeMs + c.codec.decodeMs)))
const bytesTarget = results.flatMap((r) => r.chains.filter((c) => c.quantization === 'f16').flatMap((c) => c.hops.map((h) => Math.max(h.wireUpPerToken, h.wireDownPerToken) / bytesLimit(r.hidden))))

report(flags, {
  benchmark: 'mesh',
  cores: cpus().length,
  machine: `all nodes (client, 3 servers, spare) in one process on one machine, loopback TCP with noise and yamux; servers on ${serversOn === 'threads' ? 'a worker thread each' : 'the client\'s thread'}`,
  servers: serversOn,
  offload,
  loadAverage: { before: loadBefore, after: loadAfter },
  threadsPerStage: threads,
  variant,
  latencyInjection: 'TCP delay proxy in the client process (bench/lib/delay-proxy.ts), one-way delay per direction',
  results,
  targets: {
    perHopOverheadMs: TARGET_OVERHEAD_MS,
    bytesPerTokenPerHop: `${TARGET_BYTES_FACTOR} x hidden x 2 + ${TARGET_HEADER_BYTES}`,
    concurrentOfBound: TARGET_CONCURRENT,
    recoveryOverReprefill: TARGET_RECOVERY,
    overheadMet: overheadTarget.length > 0 ? overheadTarget.every((o) => o <= TARGET_OVERHEAD_MS) : null,
    bytesMet: bytesTarget.length > 0 ? bytesTarget.every((b) => b <= 1) : null,
    concurrentMet: concurrentMet(true),
    concurrentMetInThread: concurrentMet(false),
    recoveryMet: recoveryMet(true),
    recoveryMetDialling: recoveryMet(false)
  }
}, [
  {
    title: `Decode tok/s: the mesh chain (head 1 layer + 3 servers + tail 1 layer) beside LocalModel (the faster of a run before and one after the chains), same model, this run (weights ${variant}, ${threads} onnxruntime thread(s) per stage)`,
    headers: ['shape', 'activations', 'prompt', 'tokens', 'local tok/s', 'mesh tok/s', 'mesh/local', 'local ms/tok', 'mesh ms/tok', 'head ms', 'tail ms', 'hop rtts ms', 'other ms', 'event loop', 'same tokens'],
    rows: results.flatMap((r) => r.chains.map((c) => [r.shape, c.quantization === 'none' ? 'f32' : c.quantization, r.promptTokens, r.decodeTokens, r.local.tokPerS, c.tokPerS, c.tokPerS / r.local.tokPerS, r.local.msPerToken, c.msPerToken, c.headMsP50, c.tailMsP50, c.hops.reduce((a, h) => a + h.rttP50, 0), c.otherMs, c.eventLoop, c.sameTokensAsLocal ? 'yes' : 'no']))
  },
  {
    title: `Per-hop decode step, ms p50 (rtt = client send to reply read; overhead = rtt - server compute_ms; codec = the client's frame encode + decode, outside rtt; server work / transport (servers on this thread only) = overhead inside the server / outside it; echo = a step-sized message's round trip to server 1's thread over libp2p / bare TCP; busy echo = the libp2p echo's round trip less a block of the server's thread as long as hop 1's compute; offloaded = the same block on a thread the server awaits; target overhead + codec <= ${TARGET_OVERHEAD_MS} ms)`,
    headers: ['shape', 'act.', 'hop', 'layers', 'rtt', 'compute', 'overhead', 'overhead p90', 'server work', 'transport', 'codec', 'codec share', 'overhead+codec', 'libp2p echo', 'busy echo', 'offloaded', 'tcp echo', 'target'],
    rows: hopRows
  },
  {
    title: `Bytes per decode token per hop (frame = USXF activation frame; message = protobuf InferRequest; wire = socket bytes (length prefix, yamux incl. window updates, noise) counted from each step's send to its reply; raw = over the whole decode window, with the connection's background (identify, ping, DHT); up = to the server, down = back; limit ${TARGET_BYTES_FACTOR} x hidden x 2 + ${TARGET_HEADER_BYTES})`,
    headers: ['shape', 'act.', 'hop', 'hidden x 2', 'frame', 'message', 'raw up', 'raw down', 'wire up', 'wire down', 'limit', 'target'],
    rows: bytesRows
  },
  {
    title: `Concurrent sessions on the f16 chain, the client's head and tail in its thread vs on worker threads (offload) (aggregate = tokens of all sessions while all decode; bound = 1 / slowest stage's per-token compute, in-thread head+tail counted as one stage; cpu bound = ${cpus().length} cores / sum of stage compute; same = each session's tokens equal the same prompt run alone; target >= ${TARGET_CONCURRENT * 100}% of bound)`,
    headers: ['shape', 'head/tail', 'sessions', 'aggregate tok/s', 'wall tok/s', 'slowest stage', 'its ms/tok', 'bound tok/s', 'of bound', 'cpu bound tok/s', 'of cpu bound', 'event loop', 'same', 'target'],
    rows: results.flatMap((r) => r.concurrent.map((c) => [r.shape, c.offload ? 'workers' : 'in thread', c.sessions, c.aggregateTokPerS, c.wallTokPerS, c.slowestStage, c.slowestStageMs, c.boundTokPerS, c.ratio, c.cpuBoundTokPerS, c.aggregateTokPerS / c.cpuBoundTokPerS, c.eventLoop, c.sameTokensAsSequential ? 'yes' : 'NO', met(c.ratio >= TARGET_CONCURRENT)]))
  },
  {
    title: `Recovery from a killed middle server (the client's sockets to it destroyed with a decode step in flight; a spare serves the span, dialled at failure time or as a standby session opened beforehand; extra = interrupted step - median step; re-prefill = the spare's compute_ms for the replayed positions; →replay = from the open's reply, or with a standby from the failed read, to the replay's send; target extra <= ${TARGET_RECOVERY} x re-prefill)`,
    headers: ['shape', 'spare', 'positions', 'step ms', 'interrupted ms', 'extra ms', 're-prefill ms', 'kill→read failed', 'kill→open ms', 'open rtt', '→replay', 'replay rtt ms', 'ratio', 'failovers', 'target'],
    rows: results.flatMap((r) => r.recovery.map((c) => [r.shape, c.standby ? (c.viaStandby ? 'standby' : 'standby (unused)') : 'dialled', c.positions, c.normalStepMs, c.interruptedStepMs, c.extraMs, c.reprefillMs, c.untilFailMs, c.untilOpenMs, c.openRttMs, c.openToReplayMs, c.replayRttMs, c.ratio, c.failovers, met(c.ratio <= TARGET_RECOVERY)]))
  },
  {
    title: 'Injected link latency (TCP delay proxy per server, one-way delay each direction; expected = loopback f16 ms/token + 3 hops x 2 x delay)',
    headers: ['shape', 'one-way ms', 'expected ms/tok', 'measured ms/tok', 'expected tok/s', 'measured tok/s', 'hop rtt p50 ms', 'via proxy'],
    rows: results.flatMap((r) => r.latency.map((l) => [r.shape, l.oneWayMs, l.expectedMsPerToken, l.measuredMsPerToken, l.expectedTokPerS, l.measuredTokPerS, l.rttP50.map((x) => x.toFixed(1)).join(' / '), l.viaProxy ? 'yes' : 'NO']))
  }
], [
  `machine: ${cpus().length} cores, load average ${loadBefore.toFixed(1)} before / ${loadAfter.toFixed(1)} after; the client, the 3 servers and the spare are in-process nodes sharing the cores (servers on ${serversOn === 'threads' ? 'a worker thread each' : 'the client\'s event loop'}; client head/tail ${offload ? 'on worker threads' : 'in its thread'} outside the concurrent run); background traffic per idle connection: ${results.map((r) => `${r.shape} ${r.backgroundBytesPerSecond.toFixed(0)} B/s`).join(', ')}`,
  `targets: per-hop overhead + codec <= ${TARGET_OVERHEAD_MS} ms p50 (f16): ${met(overheadTarget.length > 0 ? overheadTarget.every((o) => o <= TARGET_OVERHEAD_MS) : null)}; ` +
  `bytes per token per hop <= limit (f16, wire): ${met(bytesTarget.length > 0 ? bytesTarget.every((b) => b <= 1) : null)}; ` +
  `${sessionCount} sessions >= ${TARGET_CONCURRENT * 100}% of the bound: ${met(concurrentMet(true))} offloaded (${met(concurrentMet(false))} in thread); ` +
  `recovery <= ${TARGET_RECOVERY} x re-prefill: ${met(recoveryMet(true))} with a standby (${met(recoveryMet(false))} dialling)`
])
// libp2p and onnxruntime keep handles open; the benchmark is done
process.exit(0)
