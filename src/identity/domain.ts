/**
 * Domain separation: every signature covers `"permagent-sig/1" 0x00 context 0x00 message`, so a
 * signature made for one purpose (a memory record, a shard, a skill manifest, a USXF header) can
 * never be replayed as another. Contexts are fixed strings listed here and in docs/protocols.md.
 */
export const SIGNATURE_CONTEXTS = {
  memoryRecord: 'permagent/brain/memory/v1',
  relationRecord: 'permagent/brain/relation/v1',
  auditEntry: 'permagent/brain/audit/v1',
  shard: 'permagent/team/shard/v1',
  membership: 'permagent/team/membership/v1',
  invite: 'permagent/team/invite/v1',
  skillManifest: 'permagent/skills/manifest/v1',
  capacityRecord: 'permagent/infer/capacity/v1',
  usxfHeader: 'permagent/usxf/header/v1'
} as const

export type SignatureContext = typeof SIGNATURE_CONTEXTS[keyof typeof SIGNATURE_CONTEXTS]

const PREFIX = new TextEncoder().encode('permagent-sig/1\u0000')
const encoder = new TextEncoder()

export function domainSeparated (context: string, message: Uint8Array): Uint8Array {
  if (context.length === 0 || context.includes('\u0000')) throw new TypeError('a signature context is a non-empty string without NUL')
  const contextBytes = encoder.encode(context)
  const out = new Uint8Array(PREFIX.length + contextBytes.length + 1 + message.length)
  out.set(PREFIX, 0)
  out.set(contextBytes, PREFIX.length)
  out[PREFIX.length + contextBytes.length] = 0
  out.set(message, PREFIX.length + contextBytes.length + 1)
  return out
}
