import type { Command } from 'commander'
import { UsageError } from './errors.ts'
import { dataDirPaths, resolveDataDir, type DataDirPaths } from './paths.ts'

/**
 * What every command needs from the CLI: where the data dir is and how to print.
 * To add commands: write node/commands/<module>.ts exporting `register(program, cli)` and list
 * it in node/commands/index.ts.
 */
export interface CliContext {
  /** The data dir paths for a command (honours the global --data-dir and PERMAGENT_HOME). */
  paths: (command: Command) => DataDirPaths
  /** Prints a result: JSON with --json, else the human form. */
  print: (command: Command, json: unknown, human: () => string) => void
  out: (text: string) => void
  err: (text: string) => void
}

export function createCliContext (env: NodeJS.ProcessEnv = process.env): CliContext {
  const out = (text: string): void => { process.stdout.write(text.endsWith('\n') ? text : text + '\n') }
  return {
    paths: (command) => dataDirPaths(resolveDataDir(command.optsWithGlobals().dataDir as string | undefined, env)),
    print: (command, json, human) => {
      if (command.optsWithGlobals().json === true) out(JSON.stringify(json, null, 2))
      else out(human())
    },
    out,
    err: (text) => { process.stderr.write(text.endsWith('\n') ? text : text + '\n') }
  }
}

/** Parses a whole number from a flag, with a usage error naming the flag. */
export function parseIntegerFlag (flag: string, value: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(value.trim())) throw new UsageError(`${flag} takes a whole number, got "${value}"`)
  const number = Number(value)
  if (number < min || number > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${number}`)
  return number
}

/** For repeatable flags: --listen a --listen b */
export function collect (value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}
