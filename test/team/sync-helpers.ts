import { createHash } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import { MemoryReconcileSet, type AcceptResult, type SyncTeam } from '../../src/team/sync/index.ts'

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex')

/**
 * Test shards: 8 bytes of big-endian timestamp, one validity byte (0 valid, 1 "bad signature"),
 * then random payload. The id is the SHA-256 of the bytes, as for real shards.
 */
export function makeShard (random: () => number, timestamp: number, size: number, valid = true): Uint8Array {
  const bytes = new Uint8Array(Math.max(9, size))
  new DataView(bytes.buffer).setBigUint64(0, BigInt(timestamp))
  bytes[8] = valid ? 0 : 1
  for (let i = 9; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256)
  return bytes
}

export function shardId (bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest())
}

function shardTimestamp (bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0))
}

/**
 * Stands in for the lead's shard store: validates (the validity byte plays the signature check),
 * commits each acceptShards call as one batch, keeps the ReconcileSet in step, and records how
 * often each id was handed to acceptShards.
 */
export class TestStore {
  readonly set = new MemoryReconcileSet()
  readonly shards = new Map<string, Uint8Array>()
  readonly deliveries = new Map<string, number>()
  acceptCalls = 0
  /** Called after each committed batch, and awaited (tests use it to stop a node mid-sync). */
  afterBatch: ((calls: number) => void | Promise<void>) | undefined

  /** A local write (or, for invalid shards, a store that skipped validation). */
  insert (bytes: Uint8Array): void {
    const id = shardId(bytes)
    if (this.shards.has(hex(id))) return
    this.shards.set(hex(id), bytes)
    this.set.add(shardTimestamp(bytes), id)
  }

  has (bytes: Uint8Array): boolean {
    return this.shards.has(hex(shardId(bytes)))
  }

  readonly getShards = (ids: Uint8Array[]): Array<Uint8Array | undefined> => ids.map((id) => this.shards.get(hex(id)))

  readonly acceptShards = async (shards: Uint8Array[]): Promise<AcceptResult> => {
    this.acceptCalls++
    let accepted = 0
    let rejected = 0
    for (const bytes of shards) {
      const key = hex(shardId(bytes))
      this.deliveries.set(key, (this.deliveries.get(key) ?? 0) + 1)
      if (bytes.length < 9 || bytes[8] !== 0) { rejected++; continue }
      if (this.shards.has(key)) continue
      this.insert(Uint8Array.from(bytes))
      accepted++
    }
    await this.afterBatch?.(this.acceptCalls)
    return { accepted, rejected }
  }

  /** The team as the sync service sees it; `members` is checked on every request. */
  team (members: Set<string>): SyncTeam {
    return {
      set: this.set,
      getShards: this.getShards,
      acceptShards: this.acceptShards,
      mayServe: (peer: PeerId) => members.has(peer.toString())
    }
  }
}
