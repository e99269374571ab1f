/**
 * Bytes on the wire of this thread's TCP connections (dialed or accepted), by remote port: every
 * byte libp2p writes and reads (noise, yamux, multistream, length prefixes, protobuf, payload),
 * as the sockets count them; TCP/IP headers are the kernel's and not included.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import type { Socket } from 'node:net'

export interface SocketBytes {
  /** Bytes this thread sent. */
  written: number
  /** Bytes this thread received. */
  read: number
}

interface Watched { socket: Socket, port: number | undefined }

/** Every socket's counters at one moment. */
export type SocketSnapshot = Map<Watched, SocketBytes>

export interface SocketWatch {
  /** Totals over every socket to one of `ports` since the watch began (closed sockets included). */
  bytes: (...ports: number[]) => SocketBytes
  snapshot: () => SocketSnapshot
  /** What the sockets to one of `ports` carried since `since` (sockets opened later count in full). */
  since: (since: SocketSnapshot, ports: readonly number[]) => SocketBytes
  /** Destroys every open socket to `port` (a peer crash, as its connections see it). */
  destroy: (port: number) => number
  stop: () => void
}

const CHANNELS = ['net.client.socket', 'net.server.socket']

/** Watches sockets created from now on (Node's `net.client.socket` and `net.server.socket` diagnostics channels). */
export function watchSockets (): SocketWatch {
  const sockets: Watched[] = []
  const onSocket = (message: unknown): void => {
    const socket = (message as { socket: Socket }).socket
    const entry: Watched = { socket, port: socket.remotePort }
    sockets.push(entry)
    // a dialed socket knows its remote port once connected, and loses it once destroyed: keep it
    if (entry.port === undefined) socket.once('connect', () => { entry.port = socket.remotePort })
  }
  for (const name of CHANNELS) diagnosticsChannel.subscribe(name, onSocket)
  const sum = (ports: readonly number[], base?: SocketSnapshot): SocketBytes => {
    let written = 0
    let read = 0
    for (const entry of sockets) {
      if (entry.port === undefined || !ports.includes(entry.port)) continue
      const before = base?.get(entry)
      written += entry.socket.bytesWritten - (before?.written ?? 0)
      read += entry.socket.bytesRead - (before?.read ?? 0)
    }
    return { written, read }
  }
  return {
    bytes: (...ports) => sum(ports),
    snapshot: () => new Map(sockets.map((entry) => [entry, { written: entry.socket.bytesWritten, read: entry.socket.bytesRead }])),
    since: (base, ports) => sum(ports, base),
    destroy (port) {
      let destroyed = 0
      for (const entry of sockets) {
        if (entry.port === port && !entry.socket.destroyed) { entry.socket.destroy(); destroyed++ }
      }
      return destroyed
    },
    stop () {
      for (const name of CHANNELS) diagnosticsChannel.unsubscribe(name, onSocket)
    }
  }
}
