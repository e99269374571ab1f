// Makes the installed tree runnable on Node >= 22 even when npm itself runs on an older Node.
// libp2p 3.x needs Node 22; the `node` dependency ships a Node 22 binary. Native addons that npm
// built against the installing Node (better-sqlite3) are rebuilt here against Node 22's headers,
// which that binary package ships, so nothing is downloaded.
import { spawnSync } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, symlinkSync, unlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const platformPackage = `node-${process.platform}-${process.arch}`
// the `node` package's preinstall installs node-<platform>-<arch> (binary + headers) and places
// the binary at node_modules/node/bin/node; later npm runs may prune the platform package
const headerCandidates = [
  join(root, 'node_modules', 'node', 'node_modules', platformPackage),
  join(root, 'node_modules', platformPackage)
]
const runtimeDir = headerCandidates.find((dir) => existsSync(join(dir, 'include', 'node', 'node.h')))
const runtimeCandidates = [join(root, 'node_modules', 'node', 'bin', 'node'), ...headerCandidates.map((dir) => join(dir, 'bin', 'node'))]
const runtime = runtimeCandidates.find((file) => existsSync(file)) ?? process.execPath

function nativeModulesLoad () {
  const probe = "const D=require('better-sqlite3');new D(':memory:').prepare('select 1').get()"
  const result = spawnSync(runtime, ['-e', probe], { cwd: root, encoding: 'utf8' })
  return result.status === 0
}

function ensureNativeModules () {
  if (nativeModulesLoad()) return
  if (runtimeDir == null) {
    process.stderr.write(`permagent: better-sqlite3 does not load under ${runtime} and the ${platformPackage} headers are gone; reinstall with \`rm -rf node_modules && npm install\`\n`)
    process.exit(1)
  }
  process.stderr.write(`permagent: rebuilding better-sqlite3 for ${runtime} (headers from ${runtimeDir})\n`)
  const npmCli = process.env.npm_execpath
  const command = npmCli != null && npmCli.endsWith('.js') ? process.execPath : 'npm'
  const args = npmCli != null && npmCli.endsWith('.js') ? [npmCli, 'rebuild', 'better-sqlite3'] : ['rebuild', 'better-sqlite3']
  const rebuild = spawnSync(command, args, {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, npm_config_nodedir: runtimeDir, npm_config_build_from_source: 'true' }
  })
  if (rebuild.status !== 0 || !nativeModulesLoad()) {
    process.stderr.write('permagent: better-sqlite3 could not be built for Node 22; see the output above\n')
    process.exit(1)
  }
}

ensureNativeModules()

// `npx permagent` from the project root looks in node_modules/.bin first; npm does not link a
// project's own bin there, and without the link npx would install a copy of the project into its
// cache on every new machine. Link it.
function linkOwnBin () {
  const binDir = join(root, 'node_modules', '.bin')
  const link = join(binDir, 'permagent')
  mkdirSync(binDir, { recursive: true })
  try {
    lstatSync(link)
    unlinkSync(link)
  } catch {}
  symlinkSync(join('..', '..', 'bin', 'permagent.js'), link)
}
if (process.platform !== 'win32' && existsSync(join(root, 'bin', 'permagent.js')) && !root.split(/[\\/]/).includes('node_modules')) {
  linkOwnBin()
}

// In a source checkout, compile TypeScript so `npx permagent` works right after `npm install`.
// (A published package ships dist/ and has no tsconfig.json, so this step is skipped there.)
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
if (existsSync(join(root, 'tsconfig.json')) && existsSync(tsc)) {
  const build = spawnSync(runtime, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' })
  if (build.status !== 0) {
    process.stderr.write('permagent: the TypeScript build failed; see the errors above\n')
    process.exit(1)
  }
}
