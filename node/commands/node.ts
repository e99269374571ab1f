import type { Command } from 'commander'
import { mkdir, readFile } from 'node:fs/promises'
import { identityFromKeyPair, loadOrCreateKeyFile, readKeyFile } from '../../src/identity/index.ts'
import { parseMultiaddr, parsePeerMultiaddr, type PeerSummary } from '../../src/mesh/index.ts'
import type { NodeStatus } from '../../src/permagent.ts'
import { writeFileAtomic } from '../../src/util/atomic-write.ts'
import { waitFor } from '../../src/util/wait-for.ts'
import { loadOrCreateApiToken } from '../api/token.ts'
import { connectToDaemon, readDaemonInfo } from '../../src/client/index.ts'
import { collect, parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { DEFAULT_API_PORT, DEFAULT_LISTEN, loadNodeConfig, readConfigFile } from '../config.ts'
import { runDaemon } from '../daemon.ts'
import { createDaemonLogger } from '../logger.ts'
import { processAlive } from '../../src/util/process.ts'

function formatUptime (ms: number): string {
  const s = Math.floor(ms / 1000)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  return h > 0 ? `${h}h${m}m` : m > 0 ? `${m}m${s % 60}s` : `${s}s`
}

function formatPeers (peers: PeerSummary[]): string {
  if (peers.length === 0) return 'no peers connected'
  return peers.map((p) => `${p.peerId}  ${p.direction.padEnd(8)} ${p.addresses.join(' ')}`).join('\n')
}

/** init, id, start, status, peers, connect, stop */
export function register (program: Command, cli: CliContext): void {
  program.command('init')
    .description('create the data dir, identity key, API token and a default config.json')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const paths = cli.paths(command)
      await mkdir(paths.root, { recursive: true, mode: 0o700 })
      const { pair, created } = await loadOrCreateKeyFile(paths.keyFile)
      await loadOrCreateApiToken(paths.apiToken)
      let configCreated = false
      try {
        await readFile(paths.config)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        const defaults = { network: { listen: DEFAULT_LISTEN, bootstrap: [], mdns: true }, api: { port: DEFAULT_API_PORT }, log: { level: 'info' } }
        await writeFileAtomic(paths.config, JSON.stringify(defaults, null, 2) + '\n', { mode: 0o600 })
        configCreated = true
      }
      await readConfigFile(paths.config)
      const identity = await identityFromKeyPair(pair)
      cli.print(command, { dataDir: paths.root, peerId: identity.peerId.toString(), brainId: identity.brainId, keyCreated: created, configCreated },
        () => `${created ? 'created' : 'kept'} identity in ${paths.root}\npeer id:  ${identity.peerId.toString()}\nbrain id: ${identity.brainId}`)
    })

  program.command('id')
    .description("print this node's peer id, brain id and public key")
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const paths = cli.paths(command)
      const identity = await identityFromKeyPair(await readKeyFile(paths.keyFile))
      const json = { peerId: identity.peerId.toString(), brainId: identity.brainId, publicKey: Buffer.from(identity.publicKey).toString('base64'), dataDir: paths.root }
      cli.print(command, json, () => `peer id:    ${json.peerId}\nbrain id:   ${json.brainId}\npublic key: ${json.publicKey}`)
    })

  program.command('start')
    .description('run the node in the foreground (Ctrl-C or `permagent stop` to end it)')
    .option('--listen <multiaddr>', 'listen address (repeatable); default /ip4/0.0.0.0/tcp/4747', collect)
    .option('--bootstrap <multiaddr>', 'peer to connect to and stay connected with (repeatable)', collect)
    .option('--no-mdns', 'do not discover peers on the LAN with mDNS')
    .option('--api-port <port>', `control API port on 127.0.0.1 (0 = any free port; default ${DEFAULT_API_PORT})`)
    .option('--log-level <level>', 'trace, debug, info, warn, error or silent')
    .action(async (options: { listen?: string[], bootstrap?: string[], mdns: boolean, apiPort?: string, logLevel?: string }, command: Command) => {
      const paths = cli.paths(command)
      // validate flags at the boundary, before anything is created
      for (const address of options.listen ?? []) parseMultiaddr(address)
      for (const address of options.bootstrap ?? []) parseMultiaddr(address)
      const apiPort = options.apiPort != null ? parseIntegerFlag('--api-port', options.apiPort, 0, 65535) : undefined
      await mkdir(paths.root, { recursive: true, mode: 0o700 })
      const config = await loadNodeConfig(paths.root, paths.config, {
        listen: options.listen,
        bootstrap: options.bootstrap,
        mdns: command.getOptionValueSource('mdns') === 'cli' ? options.mdns : undefined,
        apiPort,
        logLevel: options.logLevel
      })
      const logger = createDaemonLogger(config.log.level)
      await runDaemon(config, paths, logger)
    })

  program.command('status')
    .description('show the running node: peer id, addresses, peers, uptime')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      const status = await client.call<NodeStatus>('GET', '/api/status')
      cli.print(command, status, () => [
        `peer id:   ${status.peerId}`,
        `brain id:  ${status.brainId}`,
        `version:   ${status.version}`,
        `uptime:    ${formatUptime(status.uptimeMs)}`,
        `addresses: ${status.addresses.join('\n           ')}`,
        `dht:       ${status.routingTableSize} peers in the routing table`,
        `peers:     ${status.peers.length}`,
        ...(status.peers.length > 0 ? [formatPeers(status.peers)] : [])
      ].join('\n'))
    })

  program.command('peers')
    .description('list connected peers')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const client = await connectToDaemon(cli.paths(command).root)
      const result = await client.call<{ peers: PeerSummary[] }>('GET', '/api/peers')
      cli.print(command, result, () => formatPeers(result.peers))
    })

  program.command('connect')
    .description('connect to a peer by multiaddr, e.g. /ip4/192.168.1.5/tcp/4747/p2p/12D3KooW…')
    .argument('<multiaddr>', 'the peer address, ending in /p2p/<peer-id>')
    .option('--json', 'print JSON')
    .action(async (address: string, _options, command: Command) => {
      parsePeerMultiaddr(address)
      const client = await connectToDaemon(cli.paths(command).root)
      const result = await client.call<{ peerId: string }>('POST', '/api/connect', { multiaddr: address })
      cli.print(command, result, () => `connected to ${result.peerId}`)
    })

  program.command('stop')
    .description('stop the running node')
    .option('--json', 'print JSON')
    .action(async (_options, command: Command) => {
      const paths = cli.paths(command)
      const client = await connectToDaemon(paths.root)
      await client.call('POST', '/api/stop')
      const pid = client.info.pid
      await waitFor(async () => !processAlive(pid) || (await readDaemonInfo(paths.daemonInfo)) == null, { timeoutMs: 20_000, intervalMs: 50, what: 'the daemon to stop' })
      cli.print(command, { stopped: true, pid }, () => `stopped the node (pid ${pid})`)
    })
}
