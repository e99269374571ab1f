import { Command, CommanderError } from 'commander'
import { isPermagentError } from '../src/util/errors.ts'
import { PERMAGENT_VERSION } from '../src/version.ts'
import { createCliContext } from './cli-context.ts'
import { commandModules } from './commands/index.ts'
import { UsageError } from './errors.ts'

/**
 * The `permagent` command line. Every failure ends in one `error: …` line on stderr and a non-zero
 * exit (2 for usage errors, 1 otherwise); stack traces only with PERMAGENT_DEBUG=1.
 */
export async function main (argv: string[]): Promise<number> {
  const cli = createCliContext()
  const program = new Command('permagent')
    .description('Permagent Mesh node: a local brain, team memory, signed skills and pooled inference over libp2p')
    .version(PERMAGENT_VERSION, '-v, --version')
    .option('--data-dir <dir>', 'data directory (default: $PERMAGENT_HOME or ~/.permagent)')
    .showHelpAfterError('(run `permagent --help` to see the commands)')
    .exitOverride()
  for (const register of commandModules) register(program, cli)
  for (const command of program.commands) command.exitOverride()
  try {
    await program.parseAsync(argv)
    return 0
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (unknown command, missing argument, …)
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0
      return err.exitCode === 0 ? 0 : 2
    }
    const message = isPermagentError(err) || err instanceof Error ? err.message : String(err)
    cli.err(`error: ${message}`)
    if (process.env.PERMAGENT_DEBUG === '1' && err instanceof Error) cli.err(err.stack ?? '')
    return err instanceof UsageError ? 2 : 1
  }
}

const code = await main(process.argv)
// exit explicitly once output is flushed: idle keep-alive sockets must not hold the CLI open
process.stdout.write('', () => { process.stderr.write('', () => { process.exit(code) }) })
