export { connectToDaemon, readApiToken, type ApiClient } from './daemon-client.ts'
export { readDaemonInfo, daemonInfoSchema, type DaemonInfo } from './daemon-info.ts'
export { ApiError, DaemonNotRunningError } from './errors.ts'
