import type { MeshLibp2p } from '../mesh/index.ts'
import type { ModelManifest } from '../model/index.ts'
import { discoverModelServers, type DiscoverOptions, type ModelServers } from './discover.ts'
import { clientExtraBytes, kvBytesPerPosition, layerWeightBytes } from './plan-memory.ts'
import { describeLivePool, type LivePoolPlan } from './plan.ts'
import { measureLocalStages } from './plan-local.ts'
import { probeServers } from './route.ts'

export interface LivePlanOptions extends DiscoverOptions {
  headLayers?: number
  tailLayers?: number
  /** Positions a session needs (default 512). */
  maxLength?: number
  /** Info round trips per server, the best kept (default 3). */
  rounds?: number
  /** Measure this node's head and tail stages (loads their weights) instead of estimating them. */
  measureLocal?: boolean
  threads?: number
}

/**
 * `permagent model plan`: finds the servers of a stored model (DHT and connected peers), verifies
 * their capacity records, measures the round trip to each, and describes the pool.
 */
export async function planLivePool (libp2p: MeshLibp2p, dataDir: string, manifest: ModelManifest, options: LivePlanOptions = {}): Promise<LivePoolPlan & { withdrawn: string[], failed: ModelServers['failed'] }> {
  const model = { configSha256: manifest.configSha256, weightsSha256: manifest.weightsSha256 }
  const found = await discoverModelServers(libp2p, model, options)
  const probe = await probeServers(libp2p, found.servers.map((s) => s.peer), manifest, { rounds: options.rounds, signal: options.signal, dialMs: options.timeoutMs, replyMs: options.timeoutMs })
  const local = options.measureLocal === true ? await measureLocalStages(dataDir, manifest, { headLayers: options.headLayers ?? 1, tailLayers: options.tailLayers ?? 1, threads: options.threads }) : undefined
  const plan = describeLivePool({
    numLayers: manifest.spec.numLayers,
    layerBytes: layerWeightBytes(manifest),
    kvBytesPerLayerPosition: kvBytesPerPosition(manifest.spec, 1),
    clientExtraBytes: clientExtraBytes(manifest)
  }, found.servers, probe.servers, { ...options, local })
  return {
    ...plan,
    withdrawn: found.withdrawn.map((w) => w.peer.toString()),
    // connected peers that serve nothing (or another model) are not news; keep real failures only
    failed: [...found.failed.filter((f) => f.code !== 'ERR_NOT_SERVING' && !/could not negotiate/.test(f.message)), ...probe.failed]
  }
}
