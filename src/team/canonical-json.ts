/**
 * Canonical JSON for shard bodies: object keys sorted by UTF-16 code units, no whitespace,
 * numbers in ECMAScript's shortest round-trip form (as RFC 8785 JCS), no NaN or Infinity. The same
 * value always gives the same bytes, so a body has exactly one encoding.
 */
export function canonicalJson (value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string': return JSON.stringify(value)
    case 'boolean': return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonical JSON holds only finite numbers, got ${value}`)
      return JSON.stringify(value)
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
      const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined)
      entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
    }
    default:
      throw new TypeError(`canonical JSON cannot hold a ${typeof value}`)
  }
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeCanonicalJson (value: unknown): Uint8Array {
  return encoder.encode(canonicalJson(value))
}

/** Parses a body and insists it was canonical (so one body has one encoding). */
export function decodeCanonicalJson (bytes: Uint8Array): unknown {
  const text = decoder.decode(bytes)
  const value: unknown = JSON.parse(text)
  if (canonicalJson(value) !== text) throw new TypeError('body is not canonical JSON')
  return value
}
