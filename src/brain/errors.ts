import { PermagentError } from '../util/index.ts'

/** A memory, relation or entity that does not exist (or is not visible). */
export class NotFoundError extends PermagentError {
  constructor (message: string) {
    super('ERR_NOT_FOUND', message)
  }
}

export class UnknownTypeError extends PermagentError {
  readonly allowed: string[]
  constructor (type: string, allowed: string[]) {
    super('ERR_UNKNOWN_TYPE', `unknown entity type "${type}"; allowed types: ${allowed.join(', ')}`)
    this.allowed = allowed
  }
}

export class UnknownPredicateError extends PermagentError {
  readonly allowed: string[]
  constructor (predicate: string, allowed: string[]) {
    super('ERR_UNKNOWN_PREDICATE', `unknown predicate "${predicate}"; allowed predicates: ${allowed.join(', ')}`)
    this.allowed = allowed
  }
}

/** A relation whose subject or object type is outside the predicate's domain or range. */
export class OntologyViolationError extends PermagentError {
  constructor (message: string) {
    super('ERR_ONTOLOGY_VIOLATION', message)
  }
}

export class InvalidDateError extends PermagentError {
  constructor (what: string, value: unknown) {
    super('ERR_INVALID_DATE', `${what}: cannot parse ${JSON.stringify(String(value)).slice(0, 80)} as a date; use ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00:00Z`)
  }
}

/** A name that matches more than one entity. */
export class AmbiguousEntityError extends PermagentError {
  readonly candidates: string[]
  constructor (name: string, candidates: string[]) {
    super('ERR_AMBIGUOUS_ENTITY', `"${name}" matches several entities: ${candidates.join(', ')}; give the type`)
    this.candidates = candidates
  }
}

/** A signed record whose signature, author key or id does not check out. */
export class BadSignatureError extends PermagentError {
  constructor (message: string) {
    super('ERR_BAD_SIGNATURE', message)
  }
}

/** A line of an import file that is invalid; nothing of the file was written. */
export class ImportLineError extends PermagentError {
  readonly line: number
  readonly reason: PermagentError | undefined
  constructor (line: number, message: string, reason?: PermagentError) {
    super(reason?.code ?? 'ERR_INVALID_INPUT', `line ${line}: ${message}`, { cause: reason })
    this.line = line
    this.reason = reason
  }
}

/** The database was written by a newer version of the brain. */
export class SchemaVersionError extends PermagentError {
  constructor (found: number, known: number) {
    super('ERR_SCHEMA_VERSION', `brain database schema version ${found} is newer than this software knows (${known}); upgrade permagent`)
  }
}

export class BrainClosedError extends PermagentError {
  constructor () {
    super('ERR_BRAIN_CLOSED', 'the brain is not started (or was stopped)')
  }
}
