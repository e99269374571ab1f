import { pino, type Logger } from 'pino'
import pretty from 'pino-pretty'

/** The daemon's logger on stdout: readable lines on a terminal, one JSON object per line otherwise. */
export function createDaemonLogger (level: string): Logger {
  if (process.stdout.isTTY === true) {
    return pino({ level }, pretty({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', destination: 1 }))
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 1, sync: true }))
}
