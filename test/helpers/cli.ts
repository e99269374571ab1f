import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from '../../src/util/wait-for.ts'

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const cliEntry = join(repoRoot, 'node', 'cli.ts')

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs the CLI from source on this Node (22) and collects its output. */
export async function runCli (args: string[], options: { env?: NodeJS.ProcessEnv, timeoutMs?: number, input?: string } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [cliEntry, ...args], { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(options.input ?? '')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, options.timeoutMs ?? 60_000)
  const code = await new Promise<number>((resolve) => { child.on('close', (c) => { resolve(c ?? 1) }) })
  clearTimeout(timer)
  return { code, stdout, stderr }
}

export async function runCliJson<T = any> (args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<T> {
  const result = await runCli([...args, '--json'], options)
  if (result.code !== 0) throw new Error(`permagent ${args.join(' ')} exited ${result.code}: ${result.stderr}`)
  return JSON.parse(result.stdout) as T
}

export async function tempDataDir (prefix = 'permagent-test-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

export interface RunningDaemon {
  dataDir: string
  process: ChildProcess
  info: { pid: number, apiUrl: string, peerId: string, addresses: string[] }
  output: () => string
  /** SIGTERM and wait for exit; returns the exit code. */
  stop: () => Promise<number>
  kill: () => Promise<void>
}

/** Starts `permagent start` for a data dir on loopback with any free ports; resolves once daemon.json is written. */
export async function startDaemon (dataDir: string, extraArgs: string[] = [], options: { env?: NodeJS.ProcessEnv } = {}): Promise<RunningDaemon> {
  const args = ['start', '--data-dir', dataDir, '--api-port', '0', '--no-mdns', ...extraArgs]
  if (!extraArgs.includes('--listen')) args.push('--listen', '/ip4/127.0.0.1/tcp/0')
  const child = spawn(process.execPath, [cliEntry, ...args], { env: { ...process.env, PERMAGENT_LOG_LEVEL: 'info', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<number>((resolve) => { child.on('exit', (code, signal) => { resolve(code ?? (signal != null ? 128 : 1)) }) })
  let exitCode: number | undefined
  void exited.then((code) => { exitCode = code })
  const info = await waitFor(async () => {
    if (exitCode !== undefined) throw new Error(`daemon exited with ${exitCode} before it was ready:\n${output}`)
    try {
      const parsed = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8'))
      return parsed.pid === child.pid ? parsed : undefined
    } catch {
      return undefined
    }
  }, { timeoutMs: 30_000, intervalMs: 50, what: `daemon in ${dataDir} to write daemon.json` })
  return {
    dataDir,
    process: child,
    info,
    output: () => output,
    stop: async () => {
      if (exitCode !== undefined) return exitCode
      child.kill('SIGTERM')
      return await exited
    },
    kill: async () => {
      if (exitCode !== undefined) return
      child.kill('SIGKILL')
      await exited
    }
  }
}

export async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/**
 * `count` fresh data dirs, each holding the same synthetic tiny model (4 layers) as "tiny": one
 * checkpoint made with `model synth`, imported into each through the CLI. All are removed after
 * the test.
 */
export async function tinyModelDirs (t: { after: (fn: () => Promise<void>) => void }, count: number, options: { seed?: number, prefix?: string } = {}): Promise<string[]> {
  const checkpoint = await tempDataDir(options.prefix ?? 'permagent-tiny-model-')
  const dirs: string[] = []
  for (let i = 0; i < count; i++) dirs.push(await tempDataDir())
  t.after(async () => { for (const dir of [checkpoint, ...dirs]) await removeDir(dir) })
  const synth = await runCli(['model', 'synth', '--shape', 'tiny', '--seed', String(options.seed ?? 7), '--out', join(checkpoint, 'tiny')])
  if (synth.code !== 0) throw new Error(`model synth failed: ${synth.stderr}`)
  for (const dir of dirs) {
    const imported = await runCli(['model', 'import', join(checkpoint, 'tiny'), '--name', 'tiny', '--data-dir', dir])
    if (imported.code !== 0) throw new Error(`model import failed: ${imported.stderr}`)
  }
  return dirs
}
