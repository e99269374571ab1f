import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

/** The files a node keeps in its data dir. */
export interface DataDirPaths {
  root: string
  keyFile: string
  config: string
  apiToken: string
  daemonInfo: string
}

/** The data dir: --data-dir, else PERMAGENT_HOME, else ~/.permagent. */
export function resolveDataDir (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag != null && flag !== '') return resolve(flag)
  if (env.PERMAGENT_HOME != null && env.PERMAGENT_HOME !== '') return resolve(env.PERMAGENT_HOME)
  return join(homedir(), '.permagent')
}

export function dataDirPaths (root: string): DataDirPaths {
  return {
    root,
    keyFile: join(root, 'identity.key'),
    config: join(root, 'config.json'),
    apiToken: join(root, 'api-token'),
    daemonInfo: join(root, 'daemon.json')
  }
}
