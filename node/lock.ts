import { open, readFile, unlink } from 'node:fs/promises'
import { PermagentError } from '../src/util/errors.ts'
import { processAlive } from '../src/util/process.ts'

/**
 * Takes the data dir's daemon lock (a file holding our pid, created exclusively), so two daemons
 * never share one data dir. A lock left by a dead process is taken over.
 */
export async function acquireDaemonLock (file: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o600)
      await handle.writeFile(String(process.pid))
      await handle.close()
      return async () => { await unlink(file).catch(() => {}) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = Number((await readFile(file, 'utf8').catch(() => '')).trim())
      if (processAlive(holder) && holder !== process.pid) {
        throw new PermagentError('ERR_DAEMON_RUNNING', `a daemon is already running for this data dir (pid ${holder}); stop it with \`permagent stop\` or use another --data-dir`)
      }
      await unlink(file).catch(() => {})
    }
  }
  throw new PermagentError('ERR_DAEMON_LOCK', `cannot take the daemon lock ${file}`)
}
