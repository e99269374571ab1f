import { PermagentError } from '../util/errors.ts'

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
