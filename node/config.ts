import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { parseMultiaddr } from '../src/mesh/index.ts'
import { providerSettingsSchema } from '../src/providers/settings.ts'
import { ConfigError } from './errors.ts'

export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/4747']
export const DEFAULT_API_PORT = 4748
const MAX_CONFIG_BYTES = 1024 * 1024

const multiaddrString = z.string().max(1024).superRefine((value, ctx) => {
  try {
    parseMultiaddr(value)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

const port = z.number().int().min(0).max(65535)

/** config.json: every section optional; unknown keys are refused so a typo does not pass silently. */
export const configSchema = z.object({
  network: z.object({
    listen: z.array(multiaddrString).max(32).optional(),
    announce: z.array(multiaddrString).max(32).optional(),
    bootstrap: z.array(multiaddrString).max(256).optional(),
    mdns: z.boolean().optional(),
    targetPeers: z.number().int().min(1).max(10_000).optional()
  }).strict().optional(),
  api: z.object({
    port: port.optional()
  }).strict().optional(),
  log: z.object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional()
  }).strict().optional(),
  brain: z.object({
    maxContentBytes: z.number().int().min(1).max(16 * 1024 * 1024).optional(),
    durability: z.enum(['full', 'normal']).optional()
  }).strict().optional(),
  team: z.object({
    /** Per-author trust weights (brain id -> 0..10) applied to team recall ranking. */
    trust: z.record(z.string().regex(/^[0-9a-f]{64}$/, 'a brain id is 64 hex characters'), z.number().min(0).max(10)).optional(),
    syncIntervalMs: z.number().int().min(0).max(24 * 3600_000).optional()
  }).strict().optional(),
  /** Inference providers for the OpenAI API: default policy and team, local size limit, mesh, remote URL (docs/split-inference.md). */
  providers: providerSettingsSchema.optional()
}).strict()

export type ConfigFile = z.infer<typeof configSchema>

/** The node's settings after defaults, config.json, environment and flags are merged. */
export interface NodeConfig {
  dataDir: string
  network: { listen: string[], announce: string[], bootstrap: string[], mdns: boolean, targetPeers?: number }
  api: { port: number }
  log: { level: string }
  brain: { maxContentBytes?: number, durability?: 'full' | 'normal' }
  team: { trust?: Record<string, number>, syncIntervalMs?: number }
}

export interface ConfigFlags {
  listen?: string[]
  bootstrap?: string[]
  mdns?: boolean
  apiPort?: number
  logLevel?: string
}

export function describeZodIssues (error: z.ZodError, source: string): string {
  return error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join('.') : '(top level)'
    return `${source}: ${path}: ${issue.message}`
  }).join('; ')
}

/** Reads and validates config.json; a missing file is an empty config. */
export async function readConfigFile (file: string): Promise<ConfigFile> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`, { cause: err })
  }
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) throw new ConfigError(`${file} is larger than ${MAX_CONFIG_BYTES} bytes`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err })
  }
  const parsed = configSchema.safeParse(json)
  if (!parsed.success) throw new ConfigError(describeZodIssues(parsed.error, file))
  return parsed.data
}

function envList (env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const value = env[name]
  if (value == null || value.trim() === '') return undefined
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

/** Defaults < config.json < PERMAGENT_* environment < flags. Every value is validated. */
export async function loadNodeConfig (dataDir: string, configFile: string, flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): Promise<NodeConfig> {
  const file = await readConfigFile(configFile)
  const fromEnv: ConfigFile = {}
  const envListen = envList(env, 'PERMAGENT_LISTEN')
  const envBootstrap = envList(env, 'PERMAGENT_BOOTSTRAP')
  const envApiPort = env.PERMAGENT_API_PORT
  const envMdns = env.PERMAGENT_MDNS
  const envCheck = configSchema.safeParse({
    network: {
      ...(envListen != null ? { listen: envListen } : {}),
      ...(envBootstrap != null ? { bootstrap: envBootstrap } : {}),
      ...(envMdns != null ? { mdns: envMdns === 'true' || envMdns === '1' ? true : envMdns === 'false' || envMdns === '0' ? false : envMdns } : {})
    },
    api: envApiPort != null ? { port: Number(envApiPort) } : {},
    log: env.PERMAGENT_LOG_LEVEL != null ? { level: env.PERMAGENT_LOG_LEVEL } : {}
  })
  if (!envCheck.success) throw new ConfigError(describeZodIssues(envCheck.error, 'environment (PERMAGENT_*)'))
  Object.assign(fromEnv, envCheck.data)
  const flagCheck = configSchema.safeParse({
    network: {
      ...(flags.listen != null && flags.listen.length > 0 ? { listen: flags.listen } : {}),
      ...(flags.bootstrap != null && flags.bootstrap.length > 0 ? { bootstrap: flags.bootstrap } : {}),
      ...(flags.mdns != null ? { mdns: flags.mdns } : {})
    },
    api: flags.apiPort != null ? { port: flags.apiPort } : {},
    log: flags.logLevel != null ? { level: flags.logLevel } : {}
  })
  if (!flagCheck.success) throw new ConfigError(describeZodIssues(flagCheck.error, 'command-line flags'))
  const layers = [file, fromEnv, flagCheck.data]
  const pick = <T>(get: (c: ConfigFile) => T | undefined, fallback: T): T => {
    let value = fallback
    for (const layer of layers) {
      const v = get(layer)
      if (v !== undefined) value = v
    }
    return value
  }
  return {
    dataDir,
    network: {
      listen: pick((c) => c.network?.listen, DEFAULT_LISTEN),
      announce: pick((c) => c.network?.announce, []),
      bootstrap: pick((c) => c.network?.bootstrap, []),
      mdns: pick((c) => c.network?.mdns, true),
      targetPeers: pick((c) => c.network?.targetPeers, undefined)
    },
    api: { port: pick((c) => c.api?.port, DEFAULT_API_PORT) },
    log: { level: pick((c) => c.log?.level, 'info') },
    brain: { maxContentBytes: file.brain?.maxContentBytes, durability: file.brain?.durability },
    team: { trust: file.team?.trust, syncIntervalMs: file.team?.syncIntervalMs }
  }
}
