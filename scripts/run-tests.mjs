// Runs every test file under test/ with node:test on the Node 22 runtime (npm scripts put the
// bundled `node` first on PATH). Test files are TypeScript run directly by Node's type stripping.
// Usage: node scripts/run-tests.mjs [path-prefix ...]   e.g. test/identity test/mesh
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const roots = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['test']
const files = []
function walk (path) {
  const info = statSync(path)
  if (info.isDirectory()) {
    for (const entry of readdirSync(path).sort()) walk(join(path, entry))
  } else if (path.endsWith('.test.ts')) {
    files.push(relative(process.cwd(), path))
  }
}
for (const root of roots) walk(root)
if (files.length === 0) {
  process.stderr.write(`no test files under ${roots.join(', ')}\n`)
  process.exit(1)
}
const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  process.stderr.write(`tests need Node >= 22 (this is ${process.version}); run them through npm (npm test), which uses the bundled Node 22\n`)
  process.exit(1)
}
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files], { stdio: 'inherit' })
process.exit(result.status ?? 1)
