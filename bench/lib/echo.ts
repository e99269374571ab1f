/**
 * Transport floors for the per-hop overhead: the round trip of a message of a given size echoed
 * over a libp2p stream (length-prefixed, yamux, noise, TCP) and over a bare TCP socket, served
 * by the same thread as a layer server, so the difference to a decode step's round trip is what
 * the inference protocol itself adds.
 */
import { createConnection, createServer, type Server } from 'node:net'
import { Worker } from 'node:worker_threads'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { MessageChannel, openChannel } from '../../src/mesh/index.ts'
import { summarize } from './index.ts'

export const ECHO_PROTOCOL = '/permagent-bench/echo/1.0.0'
/** The same block, but on a worker thread the server waits for: its own event loop stays free meanwhile. */
export const OFFLOADED_ECHO_PROTOCOL = '/permagent-bench/offloaded-echo/1.0.0'
/** The same, but the server first blocks its thread for the number of ms in the message's first 4 bytes (u32 LE), as a synchronous onnxruntime run does. */
export const BUSY_ECHO_PROTOCOL = '/permagent-bench/busy-echo/1.0.0'
const MAX_ECHO_BYTES = 16 * 1024 * 1024

/** Echoes every message on ECHO_PROTOCOL streams until the stream ends. */
export async function handleEcho (libp2p: Libp2p): Promise<void> {
  await libp2p.handle(ECHO_PROTOCOL, async (stream, connection) => {
    const channel = new MessageChannel(ECHO_PROTOCOL, stream, connection.remotePeer, MAX_ECHO_BYTES)
    try {
      for (;;) await channel.send((await channel.receive({ timeoutMs: 60_000 })).subarray())
    } catch {
      channel.abort(new Error('echo ended'))
    }
  })
}

/** Echoes like handleEcho, after blocking the thread as long as each message asks. */
export async function handleBusyEcho (libp2p: Libp2p): Promise<void> {
  await libp2p.handle(BUSY_ECHO_PROTOCOL, async (stream, connection) => {
    const channel = new MessageChannel(BUSY_ECHO_PROTOCOL, stream, connection.remotePeer, MAX_ECHO_BYTES)
    try {
      for (;;) {
        const message = (await channel.receive({ timeoutMs: 60_000 })).subarray()
        const busyMs = new DataView(message.buffer, message.byteOffset, message.byteLength).getUint32(0, true)
        const until = performance.now() + busyMs
        while (performance.now() < until) { /* a compute stand-in: the thread does nothing else */ }
        await channel.send(message)
      }
    } catch {
      channel.abort(new Error('echo ended'))
    }
  })
}

/** A thread that blocks for the ms it is sent, then answers: a compute stand-in off the caller's event loop. */
const SPIN_WORKER = `
const { parentPort } = require('node:worker_threads')
parentPort.on('message', (ms) => { const until = performance.now() + ms; while (performance.now() < until) {} parentPort.postMessage(ms) })
`

/** Echoes like handleBusyEcho, with the block on a worker thread; returns a stop for that thread. */
export async function handleOffloadedEcho (libp2p: Libp2p): Promise<() => Promise<void>> {
  const spinner = new Worker(SPIN_WORKER, { eval: true })
  spinner.unref()
  await libp2p.handle(OFFLOADED_ECHO_PROTOCOL, async (stream, connection) => {
    const channel = new MessageChannel(OFFLOADED_ECHO_PROTOCOL, stream, connection.remotePeer, MAX_ECHO_BYTES)
    try {
      for (;;) {
        const message = (await channel.receive({ timeoutMs: 60_000 })).subarray()
        const busyMs = new DataView(message.buffer, message.byteOffset, message.byteLength).getUint32(0, true)
        await new Promise((resolve) => { spinner.once('message', resolve); spinner.postMessage(busyMs) })
        await channel.send(message)
      }
    } catch {
      channel.abort(new Error('echo ended'))
    }
  })
  return async () => { await spinner.terminate() }
}

/** p50 of (round trip - busyMs), ms, of messages of `bytes` whose server blocks `busyMs` (on its thread, or offloaded) before echoing. */
export async function busyEchoOverheadMs (libp2p: Libp2p, peer: PeerId, bytes: number, busyMs: number, rounds = 20, protocol = BUSY_ECHO_PROTOCOL): Promise<number> {
  const channel = await openChannel(libp2p, peer, protocol, { maxMessageBytes: MAX_ECHO_BYTES })
  const message = new Uint8Array(Math.max(4, bytes)).fill(7)
  new DataView(message.buffer).setUint32(0, Math.round(busyMs), true)
  const samples: number[] = []
  try {
    for (let i = 0; i < rounds; i++) {
      const started = performance.now()
      await channel.send(message)
      await channel.receive({ timeoutMs: 10_000 + Math.round(busyMs) })
      samples.push(performance.now() - started - Math.round(busyMs))
    }
  } finally {
    await channel.close(AbortSignal.timeout(5000))
  }
  return summarize(samples.slice(2)).p50
}

/** A TCP echo server on 127.0.0.1 (returns its port). */
export async function startTcpEcho (): Promise<{ port: number, server: Server }> {
  const server = createServer({ noDelay: true }, (socket) => { socket.on('data', (chunk) => socket.write(chunk)); socket.on('error', () => { socket.destroy() }) })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', () => { resolve() }) })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the echo server has no port')
  return { port: address.port, server }
}

/** p50 round trip, ms, of `rounds` messages of `bytes` echoed over a libp2p stream to `peer`. */
export async function libp2pEchoMs (libp2p: Libp2p, peer: PeerId, bytes: number, rounds = 200): Promise<number> {
  const channel = await openChannel(libp2p, peer, ECHO_PROTOCOL, { maxMessageBytes: MAX_ECHO_BYTES })
  const message = new Uint8Array(bytes).fill(7)
  const samples: number[] = []
  try {
    for (let i = 0; i < rounds; i++) {
      const started = performance.now()
      await channel.send(message)
      await channel.receive({ timeoutMs: 10_000 })
      samples.push(performance.now() - started)
    }
  } finally {
    await channel.close(AbortSignal.timeout(5000))
  }
  return summarize(samples.slice(Math.floor(rounds / 10))).p50
}

/** p50 round trip, ms, of `rounds` messages of `bytes` over a bare loopback TCP socket. */
export async function tcpEchoMs (port: number, bytes: number, rounds = 200): Promise<number> {
  const socket = createConnection({ host: '127.0.0.1', port, noDelay: true })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const message = Buffer.alloc(bytes, 7)
  const samples: number[] = []
  try {
    for (let i = 0; i < rounds; i++) {
      const started = performance.now()
      await new Promise<void>((resolve) => {
        let got = 0
        const onData = (chunk: Buffer): void => { got += chunk.byteLength; if (got >= bytes) { socket.off('data', onData); resolve() } }
        socket.on('data', onData)
        socket.write(message)
      })
      samples.push(performance.now() - started)
    }
  } finally {
    socket.destroy()
  }
  return summarize(samples.slice(Math.floor(rounds / 10))).p50
}
