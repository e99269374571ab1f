/**
 * The base of every error the library throws on purpose. `code` is stable and is what callers,
 * the CLI and the control API match on; `message` is written for a person.
 */
export class PermagentError extends Error {
  readonly code: string

  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

export function isPermagentError (err: unknown): err is PermagentError {
  return err instanceof PermagentError
}

/** Input from outside (network, file, CLI, API) that failed validation. */
export class InvalidInputError extends PermagentError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_INPUT', message, options)
  }
}

/** A message or value larger than its limit. */
export class TooLargeError extends PermagentError {
  constructor (what: string, size: number, limit: number) {
    super('ERR_TOO_LARGE', `${what} is ${size} bytes; the limit is ${limit} bytes`)
  }
}

export function errorMessage (err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
