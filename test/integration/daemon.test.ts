import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { waitFor } from '../../src/util/wait-for.ts'
import { removeDir, runCli, runCliJson, startDaemon, tempDataDir } from '../helpers/cli.ts'

function assertCleanError (result: { code: number, stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, 'expected a non-zero exit')
  assert.match(result.stderr, pattern)
  assert.doesNotMatch(result.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace')
}

test('two daemons connect via --bootstrap, list each other, and keep their peer ids across restarts', async (t) => {
  const dirA = await tempDataDir()
  const dirB = await tempDataDir()
  t.after(async () => { await removeDir(dirA); await removeDir(dirB) })

  let a = await startDaemon(dirA)
  let b = await startDaemon(dirB, ['--bootstrap', a.info.addresses[0]])
  t.after(async () => { await a.kill(); await b.kill() })
  assert.match(a.output(), new RegExp(a.info.peerId))
  assert.match(a.output(), /listening on \/ip4\/127\.0\.0\.1\/tcp\/\d+/)

  const listsPeer = async (dir: string, peerId: string): Promise<boolean> => {
    const status = await runCliJson(['status', '--data-dir', dir])
    return status.peers.some((p: { peerId: string }) => p.peerId === peerId)
  }
  await waitFor(async () => await listsPeer(dirA, b.info.peerId) && await listsPeer(dirB, a.info.peerId), { timeoutMs: 20_000, what: 'both daemons listing each other' })
  const statusA = await runCliJson(['status', '--data-dir', dirA])
  assert.equal(statusA.peerId, a.info.peerId)
  assert.ok(statusA.addresses.length > 0)
  assert.ok(statusA.uptimeMs >= 0)
  const peersB = await runCliJson(['peers', '--data-dir', dirB])
  assert.deepEqual(peersB.peers.map((p: { peerId: string }) => p.peerId), [a.info.peerId])

  const idA = a.info.peerId
  const idB = b.info.peerId
  assert.equal(await a.stop(), 0)
  const stopB = await runCli(['stop', '--data-dir', dirB])
  assert.equal(stopB.code, 0, stopB.stderr)
  await waitFor(async () => { try { await stat(join(dirB, 'daemon.json')); return false } catch { return true } }, { what: 'daemon.json removed' })

  a = await startDaemon(dirA)
  b = await startDaemon(dirB)
  assert.equal(a.info.peerId, idA)
  assert.equal(b.info.peerId, idB)
  // connect explicitly this time, through the CLI
  const connected = await runCliJson(['connect', a.info.addresses[0], '--data-dir', dirB])
  assert.equal(connected.peerId, idA)
  await waitFor(async () => await listsPeer(dirA, idB), { timeoutMs: 20_000, what: 'A listing B after restart' })
})

test('the control API listens on loopback only and answers 401 without the token', async (t) => {
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(dir) })
  const daemon = await startDaemon(dir)
  t.after(async () => { await daemon.kill() })
  const url = new URL(daemon.info.apiUrl)
  assert.equal(url.hostname, '127.0.0.1')
  assert.equal((await fetch(`${daemon.info.apiUrl}/api/status`)).status, 401)
  assert.equal((await fetch(`${daemon.info.apiUrl}/api/status`, { headers: { authorization: 'Bearer wrong-token-wrong-token-wrong-token' } })).status, 401)
  const token = (await readFile(join(dir, 'api-token'), 'utf8')).trim()
  assert.equal((await stat(join(dir, 'api-token'))).mode & 0o777, 0o600)
  const ok = await fetch(`${daemon.info.apiUrl}/api/status`, { headers: { authorization: `Bearer ${token}` } })
  assert.equal(ok.status, 200)
  assert.equal((await ok.json() as { peerId: string }).peerId, daemon.info.peerId)
  const metrics = await fetch(`${daemon.info.apiUrl}/api/metrics`, { headers: { authorization: `Bearer ${token}` } })
  assert.equal(metrics.status, 200)
  assert.match(await metrics.text(), /permagent_peers 0/)
  assert.equal((await fetch(`${daemon.info.apiUrl}/api/metrics`)).status, 401)
  const badBody = await fetch(`${daemon.info.apiUrl}/api/connect`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"multiaddr": 5}' })
  assert.equal(badBody.status, 400)
  assert.match((await badBody.json() as { error: { message: string } }).error.message, /multiaddr/)
  if (process.platform === 'linux') {
    // the kernel's socket table shows the listening address: 0100007F is 127.0.0.1
    const port = Number(url.port).toString(16).toUpperCase().padStart(4, '0')
    const table = await readFile('/proc/net/tcp', 'utf8') + await readFile('/proc/net/tcp6', 'utf8').catch(() => '')
    const listening = table.split('\n').filter((line) => line.includes(`:${port} `) && / 0A /.test(line))
    assert.ok(listening.length > 0, 'API socket found')
    for (const line of listening) assert.match(line.trim().split(/\s+/)[1], /^0100007F:/)
  }
})

test('clear errors and non-zero exits: bad key file, corrupt config, port in use, unknown command, malformed multiaddr', async (t) => {
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(dir) })
  assert.equal((await runCli(['init', '--data-dir', dir])).code, 0)

  assertCleanError(await runCli(['frobnicate']), /unknown command 'frobnicate'/)
  assertCleanError(await runCli(['connect', 'not-a-multiaddr', '--data-dir', dir]), /not a valid multiaddr/)
  assertCleanError(await runCli(['start', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/notaport']), /not a valid multiaddr/)
  assertCleanError(await runCli(['start', '--data-dir', dir, '--bootstrap', '/nonsense/1']), /not a valid multiaddr/)
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', 'abc']), /--api-port takes a whole number/)
  assertCleanError(await runCli(['status', '--data-dir', dir]), /no daemon is running/)

  const config = join(dir, 'config.json')
  const goodConfig = await readFile(config, 'utf8')
  await writeFile(config, '{"network": {"listen": "oops"}}')
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /config\.json: network\.listen: /)
  await writeFile(config, '{"network": {"mdns": "yes"}}')
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /network\.mdns/)
  await writeFile(config, '{"netwrok": {}}')
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /netwrok/)
  await writeFile(config, '{ this is not json')
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /config\.json is not valid JSON/)
  await writeFile(config, goodConfig)

  const keyFile = join(dir, 'identity.key')
  const goodKey = await readFile(keyFile, 'utf8')
  await chmod(keyFile, 0o644)
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /key file .*identity\.key.*chmod 600/)
  assertCleanError(await runCli(['id', '--data-dir', dir]), /key file/)
  await chmod(keyFile, 0o600)
  await writeFile(keyFile, 'garbage')
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0']), /key file .* not valid JSON/)
  await writeFile(keyFile, goodKey)

  // a libp2p port and an API port that are already taken
  const blocker = createServer()
  await new Promise<void>((resolve) => { blocker.listen(0, '127.0.0.1', resolve) })
  t.after(() => { blocker.close() })
  const taken = (blocker.address() as { port: number }).port
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0', '--no-mdns', '--listen', `/ip4/127.0.0.1/tcp/${taken}`]), /already in use/)
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', String(taken), '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0']), /control API port \d+ .*already in use/)
  // nothing was left behind by the failed starts
  await assert.rejects(stat(join(dir, 'daemon.json')))
  await assert.rejects(stat(join(dir, 'daemon.lock')))

  // a second daemon on the same data dir is refused
  const daemon = await startDaemon(dir)
  t.after(async () => { await daemon.kill() })
  assertCleanError(await runCli(['start', '--data-dir', dir, '--api-port', '0', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0']), /already running/)
})

test('PERMAGENT_HOME selects the data dir', async (t) => {
  const dir = await tempDataDir()
  t.after(async () => { await removeDir(dir) })
  const init = await runCliJson(['init'], { env: { PERMAGENT_HOME: dir } })
  const id = await runCliJson(['id', '--data-dir', dir])
  assert.equal(init.peerId, id.peerId)
})
