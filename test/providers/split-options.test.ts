import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readConfigFile } from '../../node/config.ts'
import { asksVerification, createCurrentResolver, createFaultyPeers, requestVerification, type ProviderResolver, type ProviderSettings } from '../../src/providers/index.ts'
import { PermagentError } from '../../src/util/index.ts'

test('a request\'s verification over the configured default: a rate brings canaries, rate 0 opts out', () => {
  assert.equal(requestVerification(undefined, undefined), null)
  assert.deepEqual(requestVerification(undefined, { rate: 0.25 }), { rate: 0.25, canaries: 2 })
  assert.deepEqual(requestVerification({ canaries: 5 }, { rate: 0.25 }), { rate: 0.25, canaries: 5 })
  assert.deepEqual(requestVerification({ rate: 1, canaries: 0 }, undefined), { rate: 1, canaries: 0 })
  assert.deepEqual(requestVerification({ rate: 0.5 }, undefined), { rate: 0.5, canaries: 2 })
  assert.deepEqual(requestVerification({ canaries: 3 }, undefined), { rate: 0, canaries: 3 }, 'canaries alone')
  assert.equal(requestVerification({ rate: 1, canaries: 2 }, { rate: 0 }), null, 'a request opts out of the default')
  assert.deepEqual(requestVerification({ rate: 1 }, { rate: 0, canaries: 1 }), { rate: 0, canaries: 1 })
  assert.throws(() => requestVerification(undefined, { rate: 1.5 }), (err: unknown) => err instanceof PermagentError && err.code === 'ERR_INVALID_INPUT' && /verify.rate/.test(err.message))
  assert.throws(() => requestVerification(undefined, { rate: 1, canaries: 65 }), /verify.canaries/)
  assert.equal(asksVerification(undefined), false)
  assert.equal(asksVerification({ rate: 0 }), false)
  assert.equal(asksVerification({ rate: 0, canaries: 1 }), true)
  assert.equal(asksVerification({ rate: 0.1 }), true)
})

test('config.json: providers.mesh.verify and activations are validated, errors name the field', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'permagent-provider-config-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'config.json')
  await writeFile(file, JSON.stringify({ providers: { mesh: { activations: 'int8-block', verify: { rate: 0.2, canaries: 4 } } } }))
  assert.deepEqual((await readConfigFile(file)).providers?.mesh, { activations: 'int8-block', verify: { rate: 0.2, canaries: 4 } })
  const refused = async (providers: unknown, field: RegExp): Promise<void> => {
    await writeFile(file, JSON.stringify({ providers }))
    await assert.rejects(readConfigFile(file), (err: unknown) => err instanceof PermagentError && err.code === 'ERR_CONFIG' && field.test(err.message))
  }
  await refused({ mesh: { verify: { rate: -0.1 } } }, /providers\.mesh\.verify\.rate/)
  await refused({ mesh: { verify: { canaries: 1.5 } } }, /providers\.mesh\.verify\.canaries/)
  await refused({ mesh: { verify: { rate: 1, tolerance: 0.1 } } }, /providers\.mesh\.verify/)
  await refused({ mesh: { activations: 'f8' } }, /providers\.mesh\.activations/)
})

test('servers caught lying stay excluded until their time is up; the list is bounded', () => {
  let now = 1_000_000
  const faulty = createFaultyPeers({ ttlMs: 1000, max: 2, now: () => now })
  const fault = (peer: string): Parameters<typeof faulty.record>[0] => ({ hop: 1, start: 2, end: 3, peer, kind: 'step', position: 0, step: 0, maxAbsDiff: 1, ratio: 300, referee: 'local' })
  faulty.record(fault('a'))
  assert.deepEqual(faulty.excluded('a'), { peer: 'a', start: 2, end: 3, kind: 'step', ratio: 300, at: new Date(1_000_000).toISOString(), until: new Date(1_001_000).toISOString() })
  assert.equal(faulty.excluded('b'), null)
  faulty.record(fault('b'))
  faulty.record(fault('c'))
  assert.equal(faulty.excluded('a'), null, 'the oldest went first beyond max')
  now += 1000
  assert.equal(faulty.excluded('b'), null, 'expired')
})

test('the current resolver follows the settings: rebuilt only when they change, the old one closed when its last user is done', async () => {
  let settings: ProviderSettings = { policy: 'mesh' }
  const built: Array<{ settings: ProviderSettings, closed: boolean }> = []
  const current = createCurrentResolver({
    load: async () => settings,
    build: (s) => {
      const entry = { settings: s, closed: false }
      built.push(entry)
      return { close: async () => { entry.closed = true } } as unknown as ProviderResolver
    }
  })
  await current.use(async () => {})
  await current.use(async () => {})
  assert.equal(built.length, 1, 'same settings, same resolver')
  let release = (): void => {}
  const running = current.use(async (_resolver, seen) => {
    assert.deepEqual(seen, { policy: 'mesh' })
    await new Promise<void>((resolve) => { release = resolve })
  })
  settings = { policy: 'cloud-allowed' }
  await current.use(async (_resolver, seen) => { assert.deepEqual(seen, { policy: 'cloud-allowed' }) })
  assert.equal(built.length, 2)
  assert.equal(built[0].closed, false, 'a request still uses the old one')
  release()
  await running
  assert.equal(built[0].closed, true)
  const failing = createCurrentResolver({ load: async () => { throw new PermagentError('ERR_CONFIG', 'config.json: providers.policy: invalid') }, build: () => { throw new Error('not built') } })
  await assert.rejects(failing.use(async () => {}), /providers\.policy/)
  await current.close()
  assert.equal(built[1].closed, true)
})
