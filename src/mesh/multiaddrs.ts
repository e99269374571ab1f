import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidMultiaddrError } from './errors.ts'

/** Parses a multiaddr from outside (CLI, config, API), with a typed error naming the bad value. */
export function parseMultiaddr (value: string): Multiaddr {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidMultiaddrError(String(value), 'it is empty')
  if (value.length > 1024) throw new InvalidMultiaddrError(value.slice(0, 64) + '…', 'it is longer than 1024 characters')
  if (!value.startsWith('/')) throw new InvalidMultiaddrError(value, 'a multiaddr starts with "/", e.g. /ip4/127.0.0.1/tcp/4001/p2p/<peer-id>')
  try {
    const ma = multiaddr(value)
    // round-trip to surface lazily reported errors now, at the boundary
    ma.getComponents()
    return ma
  } catch (err) {
    throw new InvalidMultiaddrError(value, (err as Error).message)
  }
}

/** Like parseMultiaddr, but the address must name the peer (/p2p/<peer-id>) so we know whom we dial. */
export function parsePeerMultiaddr (value: string): Multiaddr {
  const ma = parseMultiaddr(value)
  if (ma.getComponents().every((c) => c.name !== 'p2p')) {
    throw new InvalidMultiaddrError(value, 'it must end in /p2p/<peer-id>')
  }
  return ma
}
