import type { Command } from 'commander'
import { peerIdFromString } from '@libp2p/peer-id'
import { connectToDaemon } from '../../src/client/index.ts'
import { parseIntegerFlag, type CliContext } from '../cli-context.ts'
import { UsageError } from '../errors.ts'
import type { DrainReply } from '../api/routes/drain.ts'

/** The human summary of a drain, one line per kind of session. */
function describeDrain (reply: DrainReply): string {
  const lines: string[] = []
  const layer = reply.layerSessions
  if (layer == null) {
    lines.push('layer sessions: not serving a span')
  } else {
    lines.push(`layer sessions: ${layer.moved.length} moved to ${reply.to} in ${(layer.ms / 1000).toFixed(1)} s${layer.stopped ? '; stopped serving' : ''}`)
    for (const failed of layer.failed) lines.push(`  not moved: session ${failed.sessionId} of ${failed.client}: ${failed.code} ${failed.message}`)
    if (layer.awaitingClients > 0) lines.push(`  ${layer.awaitingClients} client(s) had not come back yet; they fail over by replay`)
  }
  const hosted = reply.hostedSessions
  lines.push(`hosted sessions: ${hosted.migrated.length} migrated to ${reply.to}${hosted.failed.length > 0 ? `, ${hosted.failed.length} not moved (they stay here)` : ''}; no new sessions taken`)
  for (const moved of hosted.migrated) lines.push(`  ${moved.sessionId}: ${moved.positions} positions, ${moved.streamBytes} bytes in ${moved.timings.totalMs.toFixed(0)} ms, fidelity ${moved.fidelity?.verdict ?? 'unchecked'}`)
  for (const failed of hosted.failed) lines.push(`  not moved: session ${failed.sessionId}: ${failed.code} ${failed.message}`)
  return lines.join('\n')
}

/** drain: the running node hands its live sessions to another peer with no replay, then stops serving. */
export function register (program: Command, cli: CliContext): void {
  program.command('drain')
    .description('hand the running node\'s live sessions to another peer (same model and span), with no replay, then stop serving')
    .requiredOption('--to <peer>', 'peer id of the node that takes the sessions')
    .option('--client-wait <ms>', 'how long to wait for moved sessions\' clients to be told (default 10000)')
    .option('--timeout <s>', 'how long to wait for the whole drain (default 1800)')
    .option('--json', 'print JSON')
    .action(async (options: { to: string, clientWait?: string, timeout?: string }, command: Command) => {
      try {
        peerIdFromString(options.to)
      } catch {
        throw new UsageError(`--to takes a peer id (see \`permagent status\` on that node), got "${options.to}"`)
      }
      const timeoutMs = (options.timeout != null ? parseIntegerFlag('--timeout', options.timeout, 1, 86_400) : 1800) * 1000
      const client = await connectToDaemon(cli.paths(command).root)
      const reply = await client.call<DrainReply>('POST', '/api/drain', {
        to: options.to,
        clientWaitMs: options.clientWait != null ? parseIntegerFlag('--client-wait', options.clientWait, 0, 600_000) : undefined
      }, { timeoutMs })
      cli.print(command, reply, () => describeDrain(reply))
    })
}
