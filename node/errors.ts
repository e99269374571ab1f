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

/** No daemon answers for the data dir. */
export class DaemonNotRunningError extends PermagentError {
  constructor (dataDir: string, detail?: string) {
    super('ERR_DAEMON_NOT_RUNNING', `no daemon is running for ${dataDir}${detail != null ? ` (${detail})` : ''}; start one with \`permagent start --data-dir ${dataDir}\``)
  }
}

/** An error reply from the control API, carried to the CLI with its code. */
export class ApiError extends PermagentError {
  readonly status: number

  constructor (status: number, code: string, message: string) {
    super(code, message)
    this.status = status
  }
}
