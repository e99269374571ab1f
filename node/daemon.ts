import { unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { createPermagent } from '../src/permagent.ts'
import { writeFileAtomic } from '../src/util/atomic-write.ts'
import type { Logger } from '../src/util/logger.ts'
import { PERMAGENT_VERSION } from '../src/version.ts'
import { allRoutes } from './api/routes/index.ts'
import { startControlApi } from './api/server.ts'
import { loadOrCreateApiToken } from './api/token.ts'
import type { NodeConfig } from './config.ts'
import type { DaemonInfo } from '../src/client/index.ts'
import { acquireDaemonLock } from './lock.ts'
import type { DataDirPaths } from './paths.ts'

/**
 * Runs the node in the foreground until SIGINT/SIGTERM or `permagent stop`: starts the node,
 * serves the control API on loopback, publishes daemon.json, and on shutdown undoes all of it.
 */
export async function runDaemon (config: NodeConfig, paths: DataDirPaths, logger: Logger): Promise<void> {
  const releaseLock = await acquireDaemonLock(join(paths.root, 'daemon.lock'))
  let stopNode: (() => Promise<void>) | undefined
  let stopApi: (() => Promise<void>) | undefined
  const cleanup = async (): Promise<void> => {
    await unlink(paths.daemonInfo).catch(() => {})
    if (stopApi != null) await stopApi().catch((err) => { logger.warn({ err }, 'control API did not stop cleanly') })
    if (stopNode != null) await stopNode().catch((err) => { logger.warn({ err }, 'node did not stop cleanly') })
    await releaseLock()
  }

  try {
    const token = await loadOrCreateApiToken(paths.apiToken)
    const node = await createPermagent({
      dataDir: paths.root,
      logger,
      network: {
        listen: config.network.listen,
        announce: config.network.announce,
        bootstrap: config.network.bootstrap,
        mdns: config.network.mdns,
        targetPeers: config.network.targetPeers
      },
      brain: {
        durability: config.brain.durability,
        limits: config.brain.maxContentBytes != null ? { contentBytes: config.brain.maxContentBytes } : undefined
      },
      team: { trust: config.team.trust, syncIntervalMs: config.team.syncIntervalMs }
    })
    await node.start()
    stopNode = node.stop

    let requestShutdown: (reason: string) => void = () => {}
    const shutdownRequested = new Promise<string>((resolve) => { requestShutdown = resolve })

    const api = await startControlApi({
      node,
      token,
      port: config.api.port,
      routes: allRoutes,
      logger: logger.child({ module: 'api' }),
      onShutdownRequested: () => { requestShutdown('permagent stop') }
    })
    stopApi = api.stop

    const status = node.status()
    const info: DaemonInfo = {
      pid: process.pid,
      apiUrl: api.url,
      peerId: status.peerId,
      addresses: status.addresses,
      startedAt: status.startedAt ?? new Date().toISOString(),
      version: PERMAGENT_VERSION
    }
    await writeFileAtomic(paths.daemonInfo, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 })
    logger.info({ peerId: status.peerId, brainId: status.brainId, addresses: status.addresses, apiUrl: api.url, dataDir: paths.root }, `node started: peer id ${status.peerId}, listening on ${status.addresses.join(' ')}`)

    const onSignal = (signal: NodeJS.Signals): void => { requestShutdown(signal) }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const reason = await shutdownRequested
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    // a second signal while we shut down means "now"
    const force = (): void => { logger.warn('forced exit'); process.exit(130) }
    process.once('SIGINT', force)
    process.once('SIGTERM', force)
    logger.info({ reason }, 'shutting down')
    await cleanup()
    logger.info('node stopped')
  } catch (err) {
    await cleanup()
    throw err
  }
}
