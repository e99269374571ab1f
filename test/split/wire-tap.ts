import assert from 'node:assert/strict'
import type { Libp2p, Stream } from '@libp2p/interface'

// What a client sends on the wire, for the tests that check no token ids or text leave it.

/** Every byte the client writes on any stream it opens, per stream, exactly as handed to the muxer. */
export function tappedLibp2p (libp2p: Libp2p, streams: Array<{ protocol: string, chunks: Uint8Array[] }>): Libp2p {
  const dialProtocol = async (...args: Parameters<Libp2p['dialProtocol']>): Promise<Stream> => {
    const stream = await libp2p.dialProtocol(...args)
    const record = { protocol: stream.protocol ?? '', chunks: [] as Uint8Array[] }
    streams.push(record)
    const send = stream.send.bind(stream)
    stream.send = (data) => {
      record.chunks.push(data instanceof Uint8Array ? data.slice() : data.subarray().slice())
      return send(data)
    }
    return stream
  }
  return new Proxy(libp2p, {
    get (target, property) {
      if (property === 'dialProtocol') return dialProtocol
      const value = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}

/** Splits a byte stream into its unsigned-varint length-prefixed messages (the whole stream must parse). */
export function messages (bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  while (at < bytes.length) {
    let length = 0
    let shift = 0
    for (;;) {
      const b = bytes[at++]
      length += (b & 0x7f) * 2 ** shift
      shift += 7
      if ((b & 0x80) === 0) break
    }
    assert.ok(at + length <= bytes.length, 'a message runs past the captured bytes')
    out.push(bytes.subarray(at, at + length))
    at += length
  }
  return out
}
