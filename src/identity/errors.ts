import { PermagentError } from '../util/errors.ts'

/** The key file is missing, unreadable, malformed, or has unsafe permissions. */
export class KeyFileError extends PermagentError {
  readonly file: string

  constructor (file: string, message: string, options?: { cause?: unknown }) {
    super('ERR_KEY_FILE', `key file ${file}: ${message}`, options)
    this.file = file
  }
}

/** A signature did not verify, or a key is malformed. */
export class SignatureError extends PermagentError {
  constructor (message: string) {
    super('ERR_SIGNATURE', message)
  }
}
