import { PermagentError } from '../src/util/errors.ts'

/** A problem with how the CLI was called or configured; exits with status 2. */
export class UsageError extends PermagentError {
  constructor (message: string) {
    super('ERR_USAGE', message)
  }
}

/** The config file or an environment variable holds an invalid value; the message names the field. */
export class ConfigError extends PermagentError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG', message, options)
  }
}
