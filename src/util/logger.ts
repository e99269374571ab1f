import { pino, type Logger } from 'pino'

export type { Logger }

/** A logger that drops everything: the default for library users who pass none. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
