/**
 * A TCP proxy on 127.0.0.1 that delays every chunk by a fixed time in each direction, keeping
 * order and without holding later chunks back behind earlier ones' delays: a link with one-way
 * propagation delay `delayMs` (round trip 2 x delayMs) and loopback bandwidth.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net'

export interface DelayProxy {
  port: number
  close: () => Promise<void>
}

/** Forwards `from` to `to`, each chunk `delayMs` after it arrived. */
function delayedPipe (from: Socket, to: Socket, delayMs: number): void {
  const queue: Array<{ due: number, chunk: Buffer }> = []
  let timer: NodeJS.Timeout | null = null
  let ended = false
  const flush = (): void => {
    timer = null
    const now = performance.now()
    // timers fire in whole milliseconds; a chunk due within half of one goes now
    while (queue.length > 0 && queue[0].due <= now + 0.5) to.write((queue.shift() as { chunk: Buffer }).chunk)
    if (queue.length > 0) timer = setTimeout(flush, queue[0].due - now)
    else if (ended) to.end()
  }
  from.on('data', (chunk: Buffer) => {
    queue.push({ due: performance.now() + delayMs, chunk })
    timer ??= setTimeout(flush, delayMs)
  })
  from.on('end', () => {
    ended = true
    if (timer === null && queue.length === 0) to.end()
  })
}

export async function startDelayProxy (targetPort: number, delayMs: number): Promise<DelayProxy> {
  const open = new Set<Socket>()
  const server: Server = createServer({ noDelay: true }, (inbound) => {
    const outbound = createConnection({ host: '127.0.0.1', port: targetPort, noDelay: true })
    open.add(inbound)
    open.add(outbound)
    const teardown = (): void => { inbound.destroy(); outbound.destroy(); open.delete(inbound); open.delete(outbound) }
    inbound.on('error', teardown)
    outbound.on('error', teardown)
    inbound.on('close', () => { if (outbound.writableEnded || outbound.destroyed) teardown() })
    outbound.on('close', () => { if (inbound.writableEnded || inbound.destroyed) teardown() })
    delayedPipe(inbound, outbound, delayMs)
    delayedPipe(outbound, inbound, delayMs)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the delay proxy has no TCP port')
  return {
    port: address.port,
    close: async () => {
      for (const socket of open) socket.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
