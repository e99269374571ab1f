#!/usr/bin/env node
// The `permagent` command. libp2p 3.x needs Node >= 22; when this launcher is started by an older
// Node, it re-runs the CLI under the Node 22 binary that the `node` dependency installs, passing
// arguments, stdio, signals and the exit code through. No polyfills: the real runtime is used.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const cli = join(root, 'dist', 'node', 'cli.js')
const major = Number(process.versions.node.split('.')[0])

function bundledRuntime () {
  // the `node` package's preinstall places the Node 22 binary at node_modules/node/bin/node
  const candidates = [
    join(root, 'node_modules', 'node', 'bin', 'node'),
    join(root, 'node_modules', 'node', 'node_modules', `node-${process.platform}-${process.arch}`, 'bin', 'node')
  ]
  const found = candidates.find((file) => existsSync(file))
  if (found != null) return found
  try {
    const require = createRequire(import.meta.url)
    return join(dirname(require.resolve('node/package.json')), 'bin', 'node')
  } catch {
    return undefined
  }
}

if (!existsSync(cli)) {
  process.stderr.write(`permagent: ${cli} is missing; run \`npm install\` (it builds the project) or \`npm run build\`\n`)
  process.exit(1)
}

if (major >= 22) {
  await import(pathToFileURL(cli).href)
} else {
  const runtime = bundledRuntime()
  if (runtime == null) {
    process.stderr.write(`permagent: needs Node >= 22 (this is ${process.version}) and the bundled Node 22 is not installed; run \`npm install\`\n`)
    process.exit(1)
  }
  const child = spawn(runtime, [cli, ...process.argv.slice(2)], { stdio: 'inherit' })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => { child.kill(signal) })
  }
  child.on('exit', (code, signal) => {
    if (signal != null) {
      // die by the same signal so callers see what happened; our own forwarding handler must go first
      process.removeAllListeners(signal)
      process.kill(process.pid, signal)
    } else {
      process.exit(code ?? 1)
    }
  })
}
