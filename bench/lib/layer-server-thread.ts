/**
 * A layer server on its own node in a worker thread of this process: its own event loop, so its
 * onnxruntime runs (synchronous on the calling thread in onnxruntime-node) and its libp2p work
 * do not stall the client's, as they would not on separate machines. The same file is the
 * worker's entry point.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'

export interface LayerServerThreadOptions {
  /** The node's own data dir (key, stores). */
  nodeDir: string
  /** Where the model store is. */
  modelDataDir: string
  model: string
  layers: { start: number, end: number }
  threads: number
  maxLength: number
}

export interface LayerServerThread {
  peerId: PeerId
  /** The node's loopback TCP multiaddr, with /p2p. */
  address: string
  port: number
  /** A bare TCP echo server on the same thread (transport floor). */
  echoPort: number
  /** Stops the server and its node, then the thread. */
  stop: () => Promise<void>
}

type Ready = { type: 'ready', peerId: string, address: string, port: number, echoPort: number } | { type: 'error', message: string } | { type: 'stopped' }

export async function startLayerServerThread (options: LayerServerThreadOptions): Promise<LayerServerThread> {
  const worker = new Worker(new URL(import.meta.url), { workerData: options })
  const ready = await new Promise<Ready>((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
    worker.once('exit', (code) => { reject(new Error(`the layer server thread exited with ${code} before it was ready`)) })
  })
  if (ready.type !== 'ready') throw new Error(`the layer server thread failed: ${ready.type === 'error' ? ready.message : ready.type}`)
  let ended = false
  return {
    peerId: peerIdFromString(ready.peerId),
    address: ready.address,
    port: ready.port,
    echoPort: ready.echoPort,
    async stop () {
      if (ended) return
      ended = true
      const stopped = new Promise<void>((resolve) => { worker.once('exit', () => { resolve() }) })
      worker.postMessage('stop')
      await stopped
    }
  }
}

async function serveInThisThread (options: LayerServerThreadOptions): Promise<void> {
  const { createPermagent } = await import('../../src/permagent.ts')
  const { createLayerServer } = await import('../../src/split/index.ts')
  const { handleBusyEcho, handleEcho, handleOffloadedEcho, startTcpEcho } = await import('./echo.ts')
  const port = parentPort as NonNullable<typeof parentPort>
  try {
    const node = await createPermagent({ dataDir: join(options.nodeDir), network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, targetPeers: 0 } })
    await node.start()
    const server = createLayerServer({ libp2p: node.mesh.libp2p, dataDir: options.modelDataDir, model: options.model, layers: options.layers, threads: options.threads, limits: { maxLength: options.maxLength } })
    await server.start()
    await handleEcho(node.mesh.libp2p)
    await handleBusyEcho(node.mesh.libp2p)
    const stopSpinner = await handleOffloadedEcho(node.mesh.libp2p)
    const echo = await startTcpEcho()
    const address = node.mesh.addresses().find((a) => a.startsWith('/ip4/127.0.0.1/tcp/')) as string
    port.postMessage({ type: 'ready', peerId: node.mesh.peerId.toString(), address, port: Number(address.split('/')[4]), echoPort: echo.port } satisfies Ready)
    port.once('message', () => {
      void (async () => {
        await server.stop()
        await node.stop()
        echo.server.close()
        await stopSpinner()
        // libp2p and onnxruntime keep handles open
        process.exit(0)
      })()
    })
  } catch (err) {
    port.postMessage({ type: 'error', message: (err as Error).message } satisfies Ready)
  }
}

if (!isMainThread && (workerData as LayerServerThreadOptions | null)?.modelDataDir !== undefined) await serveInThisThread(workerData as LayerServerThreadOptions)
