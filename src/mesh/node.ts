import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify, identifyPush, type Identify, type IdentifyPush } from '@libp2p/identify'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { memory } from '@libp2p/memory'
import { ping, type Ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import type { Libp2p, PeerId, Metrics, Connection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import type { Identity } from '../identity/index.ts'
import { PermagentError } from '../util/errors.ts'
import type { Logger } from '../util/logger.ts'
import { createPolicyGater, type PolicyGater } from './gater.ts'
import { parseMultiaddr } from './multiaddrs.ts'

export const DHT_PROTOCOL = '/permagent/kad/1.0.0'
export const MDNS_SERVICE_TAG = '_permagent-mesh._udp.local'

export interface MeshServices extends Record<string, unknown> {
  identify: Identify
  identifyPush: IdentifyPush
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}

export type MeshLibp2p = Libp2p<MeshServices>

export interface MeshNodeOptions {
  identity: Identity
  logger: Logger
  /** Multiaddrs to listen on: /ip4/…/tcp/… and/or /memory/… (in-process swarms). */
  listen: string[]
  /** Addresses to announce instead of the listen addresses. */
  announce?: string[]
  /** Peers to dial on start and to stay connected to. */
  bootstrap?: string[]
  /** Discover peers on the LAN with mDNS (default true). */
  mdns?: boolean
  mdnsIntervalMs?: number
  /** Added latency per message on the memory transport (network-condition tests). */
  memoryLatencyMs?: number
  /** A libp2p private-network pre-shared key (the swarm.key file format). */
  psk?: Uint8Array
  /** Dial discovered peers while connected to fewer than this (default 32). */
  targetPeers?: number
  maxConnections?: number
  /**
   * Address ranges exempt from the inbound rate limit (libp2p allows 5 new connections per second
   * per host) and from pruning. Default: loopback, so one machine can run a swarm of daemons.
   */
  allowList?: string[]
  /** A libp2p metrics implementation, e.g. @libp2p/prometheus-metrics. */
  metrics?: (components: any) => Metrics
  /** Gossipsub message size limit in bytes (default 1 MiB). */
  maxGossipMessageBytes?: number
}

export interface PeerSummary {
  peerId: string
  addresses: string[]
  direction: 'inbound' | 'outbound'
  openedAt: number
}

/**
 * A node on the mesh: the libp2p peer (TCP or memory transport, noise, yamux, identify, ping,
 * private Kademlia DHT in server mode, signed gossipsub, mDNS), with a policy connection gater,
 * bootstrap peers kept connected, and discovered peers dialed up to a target.
 */
export interface MeshNode {
  readonly libp2p: MeshLibp2p
  readonly peerId: PeerId
  readonly gater: PolicyGater
  start: () => Promise<void>
  stop: () => Promise<void>
  addresses: () => string[]
  peers: () => PeerSummary[]
  connect: (address: string | Multiaddr, options?: { signal?: AbortSignal }) => Promise<PeerId>
  routingTableSize: () => number
}

export class MeshStartError extends PermagentError {}

export async function createMeshNode (options: MeshNodeOptions): Promise<MeshNode> {
  const { logger } = options
  const gater = createPolicyGater()
  const listen = options.listen.map((address) => parseMultiaddr(address).toString())
  const bootstrap = (options.bootstrap ?? []).map((address) => parseMultiaddr(address))
  const useMemory = listen.some((a) => a.startsWith('/memory/')) || bootstrap.some((a) => a.toString().startsWith('/memory/'))
  const useTcp = listen.some((a) => a.includes('/tcp/')) || bootstrap.some((a) => a.toString().includes('/tcp/')) || !useMemory
  const transports: Libp2pOptions['transports'] = []
  if (useTcp) transports.push(tcp())
  if (useMemory) transports.push(memory({ latency: options.memoryLatencyMs ?? 0 }))

  const peerDiscovery: Libp2pOptions['peerDiscovery'] = []
  if (options.mdns !== false && useTcp) {
    peerDiscovery.push(mdns({ serviceTag: MDNS_SERVICE_TAG, interval: options.mdnsIntervalMs ?? 10_000 }))
  }

  const config: Libp2pOptions<MeshServices> = {
    privateKey: options.identity.libp2pPrivateKey,
    addresses: { listen, announce: options.announce ?? [] },
    transports,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: gater.gater,
    connectionManager: {
      maxConnections: options.maxConnections ?? 256,
      allow: options.allowList ?? ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']
    },
    peerDiscovery,
    metrics: options.metrics,
    connectionProtector: options.psk != null ? preSharedKey({ psk: options.psk }) : undefined,
    services: {
      identify: identify({ protocolPrefix: 'permagent' }),
      // tells connected peers when our protocols change (a node that starts serving layers)
      identifyPush: identifyPush({ protocolPrefix: 'permagent' }),
      ping: ping({ protocolPrefix: 'permagent' }),
      // a private DHT: its own protocol id, server mode, and private/loopback addresses kept
      // (the default mapper drops them, which breaks a home LAN or a loopback swarm)
      dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper, allowQueryWithZeroPeers: true }),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        maxInboundDataLength: options.maxGossipMessageBytes ?? 1024 * 1024
      })
    }
  }

  let libp2p: MeshLibp2p
  try {
    libp2p = await createLibp2p({ ...config, start: false })
  } catch (err) {
    throw new MeshStartError('ERR_MESH_CONFIG', `cannot create the libp2p node: ${(err as Error).message}`, { cause: err })
  }

  const targetPeers = options.targetPeers ?? 32
  const dialing = new Set<string>()
  let stopped = true
  let bootstrapTimer: NodeJS.Timeout | undefined

  const dialQuietly = async (target: PeerId | Multiaddr, reason: string): Promise<void> => {
    const key = target.toString()
    if (stopped || dialing.has(key)) return
    dialing.add(key)
    try {
      await libp2p.dial(target, { signal: AbortSignal.timeout(10_000) })
    } catch (err) {
      logger.debug({ target: key, reason, err: (err as Error).message }, 'dial failed')
    } finally {
      dialing.delete(key)
    }
  }

  const onDiscovery = (event: CustomEvent<{ id: PeerId, multiaddrs: Multiaddr[] }>): void => {
    const peer = event.detail
    if (libp2p.getConnections(peer.id).length > 0) return
    if (libp2p.getConnections().length >= targetPeers) return
    if (!gater.allows(peer.id)) return
    void dialQuietly(peer.id, 'discovery')
  }

  const ensureBootstrapConnected = (): void => {
    for (const address of bootstrap) {
      const peerIdText = address.getComponents().find((c) => c.name === 'p2p')?.value
      const connected = peerIdText != null
        ? libp2p.getConnections().some((c) => c.remotePeer.toString() === peerIdText)
        : libp2p.getConnections().some((c) => c.remoteAddr.toString() === address.toString())
      if (!connected) void dialQuietly(address, 'bootstrap')
    }
  }

  const onConnectionOpen = (event: CustomEvent<Connection>): void => {
    logger.info({ peer: event.detail.remotePeer.toString(), address: event.detail.remoteAddr.toString(), direction: event.detail.direction }, 'peer connected')
  }
  const onConnectionClose = (event: CustomEvent<Connection>): void => {
    logger.info({ peer: event.detail.remotePeer.toString() }, 'peer disconnected')
  }

  return {
    libp2p,
    peerId: libp2p.peerId,
    gater,
    async start () {
      try {
        await libp2p.start()
      } catch (err) {
        const error = err as NodeJS.ErrnoException
        if (error.code === 'EADDRINUSE' || /EADDRINUSE|address already in use/i.test(error.message ?? '')) {
          throw new MeshStartError('ERR_ADDRESS_IN_USE', `cannot listen on ${listen.join(', ')}: the address is already in use (another node running? pick another port with --listen)`, { cause: err })
        }
        throw new MeshStartError('ERR_MESH_START', `the libp2p node failed to start: ${error.message}`, { cause: err })
      }
      stopped = false
      libp2p.addEventListener('peer:discovery', onDiscovery)
      libp2p.addEventListener('connection:open', onConnectionOpen)
      libp2p.addEventListener('connection:close', onConnectionClose)
      if (bootstrap.length > 0) {
        ensureBootstrapConnected()
        bootstrapTimer = setInterval(ensureBootstrapConnected, 5_000)
        bootstrapTimer.unref()
      }
    },
    async stop () {
      stopped = true
      if (bootstrapTimer != null) clearInterval(bootstrapTimer)
      libp2p.removeEventListener('peer:discovery', onDiscovery)
      libp2p.removeEventListener('connection:open', onConnectionOpen)
      libp2p.removeEventListener('connection:close', onConnectionClose)
      await libp2p.stop()
    },
    addresses: () => libp2p.getMultiaddrs().map((a) => a.toString()),
    peers: () => {
      const byPeer = new Map<string, PeerSummary>()
      for (const connection of libp2p.getConnections()) {
        const id = connection.remotePeer.toString()
        const existing = byPeer.get(id)
        if (existing != null) {
          existing.addresses.push(connection.remoteAddr.toString())
          continue
        }
        byPeer.set(id, {
          peerId: id,
          addresses: [connection.remoteAddr.toString()],
          direction: connection.direction,
          openedAt: connection.timeline.open
        })
      }
      return [...byPeer.values()]
    },
    async connect (address, connectOptions = {}) {
      const ma = typeof address === 'string' ? parseMultiaddr(address) : address
      const signal = AbortSignal.any([AbortSignal.timeout(15_000), ...(connectOptions.signal != null ? [connectOptions.signal] : [])])
      try {
        const connection = await libp2p.dial(ma, { signal })
        return connection.remotePeer
      } catch (err) {
        throw new PermagentError('ERR_DIAL_FAILED', `cannot connect to ${ma.toString()}: ${(err as Error).message}`, { cause: err })
      }
    },
    routingTableSize: () => (libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
  }
}
