import { InvalidInputError, TooLargeError } from '../util/index.ts'
import type { BrainLimits } from './limits.ts'
import { parseOptionalTime } from './time.ts'
import { VISIBILITIES, type RememberInput, type Visibility } from './types.ts'

const utf8 = new TextDecoder('utf-8', { fatal: true })
const SLUG = /^[a-z][a-z0-9_-]*$/
// C0/C1 control characters other than tab, newline and carriage return
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/

/** Text from outside as a string: bytes must be valid UTF-8, strings well-formed UTF-16. */
export function textFrom (value: unknown, what: string): string {
  if (value instanceof Uint8Array) {
    try {
      return utf8.decode(value)
    } catch {
      throw new InvalidInputError(`${what} is not valid UTF-8`)
    }
  }
  if (typeof value !== 'string') throw new InvalidInputError(`${what} must be a string`)
  if (!value.isWellFormed()) throw new InvalidInputError(`${what} is not valid Unicode (lone surrogate): it cannot be stored as UTF-8`)
  return value
}

export function checkBytes (text: string, limit: number, what: string): void {
  // cheap bound first: a UTF-16 unit is at most 3 UTF-8 bytes
  if (text.length * 3 <= limit) return
  const size = Buffer.byteLength(text, 'utf8')
  if (size > limit) throw new TooLargeError(what, size, limit)
}

export function checkLabel (value: unknown, limit: number, what: string): string {
  const text = textFrom(value, what).trim()
  if (text.length === 0) throw new InvalidInputError(`${what} is empty`)
  checkBytes(text, limit, what)
  if (CONTROL.test(text)) throw new InvalidInputError(`${what} contains control characters`)
  return text
}

export function optionalLabel (value: unknown, limit: number, what: string): string | null {
  return value == null ? null : checkLabel(value, limit, what)
}

export function checkVisibility (value: unknown): Visibility {
  if (value == null) return 'private'
  if (typeof value !== 'string' || !(VISIBILITIES as readonly string[]).includes(value)) {
    throw new InvalidInputError(`visibility must be one of ${VISIBILITIES.join(', ')}; got ${JSON.stringify(value)}`)
  }
  return value as Visibility
}

export function visibilityLevel (visibility: Visibility): number {
  return VISIBILITIES.indexOf(visibility)
}

export function checkConfidence (value: unknown): number {
  if (value == null) return 1
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) throw new InvalidInputError(`confidence must be a number from 0 to 1; got ${String(value)}`)
  return Math.round(value * 1000) / 1000
}

export function checkKind (value: unknown, limits: BrainLimits): string {
  if (value == null) return 'note'
  const kind = checkLabel(value, limits.kindBytes, 'kind')
  if (!SLUG.test(kind)) throw new InvalidInputError(`kind must be a lowercase word (letters, digits, - and _), e.g. fact, preference, event, decision, rule, note; got ${JSON.stringify(kind)}`)
  return kind
}

export function checkTags (value: unknown, limits: BrainLimits): string[] {
  if (value == null) return []
  if (!Array.isArray(value)) throw new InvalidInputError('tags must be a list of strings')
  if (value.length > limits.tags) throw new InvalidInputError(`at most ${limits.tags} tags; got ${value.length}`)
  const tags = [...new Set(value.map((tag) => checkLabel(tag, limits.tagBytes, 'tag')))]
  return tags.sort()
}

export interface CheckedMemoryInput {
  content: string
  key: string | null
  kind: string
  topic: string | null
  tags: string[]
  visibility: Visibility
  confidence: number
  validFrom: number | undefined
  validTo: number | null
}

export function checkContent (value: unknown, limits: BrainLimits): string {
  const content = textFrom(value, 'content')
  if (content.trim().length === 0) throw new InvalidInputError('content is empty')
  checkBytes(content, limits.contentBytes, 'content')
  return content
}

/** Validates everything a caller gives `remember`; throws before anything is written. */
export function checkMemoryInput (input: RememberInput, limits: BrainLimits): CheckedMemoryInput {
  if (input == null || typeof input !== 'object') throw new InvalidInputError('a memory needs at least { content }')
  const content = checkContent(input.content, limits)
  const validFrom = parseOptionalTime(input.validFrom, 'validFrom')
  const validTo = parseOptionalTime(input.validTo, 'validTo') ?? null
  if (validTo !== null && validFrom !== undefined && validTo <= validFrom) throw new InvalidInputError('validTo must be after validFrom')
  return {
    content,
    key: optionalLabel(input.key, limits.keyBytes, 'key'),
    kind: checkKind(input.kind, limits),
    topic: optionalLabel(input.topic, limits.topicBytes, 'topic'),
    tags: checkTags(input.tags, limits),
    visibility: checkVisibility(input.visibility),
    confidence: checkConfidence(input.confidence),
    validFrom,
    validTo
  }
}
