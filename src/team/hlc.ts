/**
 * Hybrid logical clock: wall-clock milliseconds plus a counter, so every shard a node makes is
 * ordered after everything it has seen, even when clocks disagree a little. Compared as
 * (wallMs, counter).
 */
export interface HlcTime {
  wallMs: number
  counter: number
}

export function compareHlc (a: HlcTime, b: HlcTime): number {
  return a.wallMs !== b.wallMs ? a.wallMs - b.wallMs : a.counter - b.counter
}

export interface HybridClock {
  /** A new timestamp, after every timestamp made or observed so far. */
  now: () => HlcTime
  /** Takes a remote timestamp into account (call for every accepted shard). */
  observe: (remote: HlcTime) => void
  last: () => HlcTime
}

export function createHybridClock (wallClock: () => number = Date.now, start: HlcTime = { wallMs: 0, counter: 0 }): HybridClock {
  let last: HlcTime = { ...start }
  return {
    now () {
      const wall = wallClock()
      last = wall > last.wallMs ? { wallMs: wall, counter: 0 } : { wallMs: last.wallMs, counter: last.counter + 1 }
      return { ...last }
    },
    observe (remote) {
      if (compareHlc(remote, last) > 0) last = { ...remote }
    },
    last: () => ({ ...last })
  }
}
