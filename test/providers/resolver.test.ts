import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { LocalModel } from '../../src/inference/index.ts'
import { importModel } from '../../src/model/index.ts'
import { createPermagent, type Permagent } from '../../src/permagent.ts'
import { createNodeProviders, NoProviderError, parseModelId, policyAllows, type ProviderResolver, type ProviderSettings, type RouteReport } from '../../src/providers/index.ts'
import { PermagentError } from '../../src/util/index.ts'
import { tempDir, type TempDir } from '../model/fixtures.ts'
import { startOpenAiNode, tinyModelSource, type OpenAiNode } from './fixtures.ts'

let dir: TempDir
let cloud: OpenAiNode & { dir: TempDir }
let client: Permagent
let cloudModel: LocalModel

before(async () => {
  dir = await tempDir('permagent-resolver-')
  const source = await tinyModelSource(dir.path)
  // the "cloud": another node's OpenAI API offering a model this node does not store
  cloud = await startOpenAiNode(source, { model: 'cloudy' })
  cloudModel = await LocalModel.open({ dataDir: cloud.dataDir, name: 'cloudy', threads: 1 })
  const dataDir = join(dir.path, 'client')
  await importModel(dataDir, { source, name: 'tiny' })
  client = await createPermagent({ dataDir, network: { listen: [`/memory/resolver-${randomBytes(4).toString('hex')}`], mdns: false } })
  await client.start()
})

after(async () => {
  await cloudModel?.close()
  await client?.stop()
  await cloud?.close()
  await dir?.cleanup()
})

function resolverWith (settings: ProviderSettings = {}): ProviderResolver {
  return createNodeProviders({
    node: client,
    settings: { remote: { baseUrl: cloud.baseUrl }, ...settings },
    // the key comes from the environment, not config.json
    env: { PERMAGENT_REMOTE_API_KEY: cloud.token }
  })
}

const codeOf = (code: string, message?: RegExp) => (err: unknown): boolean => {
  assert.ok(err instanceof PermagentError, String(err))
  assert.equal(err.code, code, err.message)
  if (message !== undefined) assert.match(err.message, message)
  return true
}

test('policies allow their own privacy class and every more private one', () => {
  assert.ok(policyAllows('local-only', 'local'))
  assert.ok(!policyAllows('local-only', 'team-mesh'))
  assert.ok(policyAllows('team-mesh', 'team-mesh'))
  assert.ok(!policyAllows('team-mesh', 'mesh'))
  assert.ok(policyAllows('mesh', 'team-mesh'))
  assert.ok(!policyAllows('mesh', 'cloud'))
  assert.ok(policyAllows('cloud-allowed', 'cloud'))
  assert.deepEqual(parseModelId('mesh/tiny'), { pin: 'mesh', model: 'tiny' })
  assert.deepEqual(parseModelId('remote/org/model'), { pin: 'remote', model: 'org/model' })
  assert.deepEqual(parseModelId('org/model'), { pin: null, model: 'org/model' })
  assert.deepEqual(parseModelId('mesh/'), { pin: null, model: 'mesh/' })
})

test('local-only: a stored model runs here; mesh and cloud are refused with the reason named', async () => {
  const resolver = resolverWith()
  assert.equal(resolver.defaultPolicy, 'local-only', 'private by default')
  const routes: RouteReport[] = []
  const events: string[] = []
  const result = await resolver.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 6, onRoute: (r) => { routes.push(r); events.push('route') }, onToken: () => { events.push('token') } })
  assert.deepEqual(result.route, { provider: 'local', kind: 'local', privacy: 'local' })
  assert.deepEqual(routes, [{ provider: 'local', kind: 'local', privacy: 'local' }])
  assert.equal(events[0], 'route', 'the route is known before the first token')

  // the cloud has the model, but the policy does not allow it
  await assert.rejects(resolver.generate({ model: 'cloudy', prompt: 'hi', maxTokens: 2 }), (err: unknown) => {
    assert.ok(err instanceof NoProviderError)
    assert.equal(err.code, 'ERR_MODEL_NOT_FOUND')
    assert.match(err.reasons.local, /no stored model "cloudy"/)
    assert.match(err.reasons.mesh, /policy local-only does not allow privacy class mesh/)
    assert.match(err.reasons.remote, /policy local-only does not allow privacy class cloud \(ask for cloud-allowed\)/)
    return true
  })
  await assert.rejects(resolver.generate({ model: 'mesh/tiny', prompt: 'hi', maxTokens: 2 }), codeOf('ERR_POLICY_REFUSED', /pinned to the mesh provider/))
  await assert.rejects(resolver.generate({ model: 'remote/cloudy', prompt: 'hi', maxTokens: 2 }), codeOf('ERR_POLICY_REFUSED', /ask for cloud-allowed/))
  await assert.rejects(resolver.generate({ model: 'remote/cloudy', prompt: 'hi', maxTokens: 2, policy: 'mesh' }), codeOf('ERR_POLICY_REFUSED'))
  // the cloud is not even asked for its model list
  assert.deepEqual((await resolver.models()).map((m) => [m.id, m.privacy]), [['tiny', 'local']])
})

test('cloud-allowed falls back to the remote API when nothing more private can serve; local still wins when it can', async () => {
  const resolver = resolverWith()
  const expected = await cloudModel.generate({ prompt: 'hello world', maxTokens: 8, sampling: { temperature: 0 } })
  const pieces: string[] = []
  const routes: RouteReport[] = []
  const result = await resolver.generate({ model: 'cloudy', prompt: 'hello world', maxTokens: 8, sampling: { temperature: 0 }, policy: 'cloud-allowed', onToken: (e) => { pieces.push(e.text) }, onRoute: (r) => { routes.push(r) } })
  assert.equal(result.text, expected.text)
  assert.equal(pieces.join(''), expected.text)
  assert.equal(result.route.privacy, 'cloud')
  assert.equal(result.route.origin, new URL(cloud.baseUrl).origin)
  assert.deepEqual(routes.map((r) => r.privacy), ['cloud'])
  const pinned = await resolver.generate({ model: 'remote/cloudy', prompt: 'hello world', maxTokens: 8, policy: 'cloud-allowed' })
  assert.equal(pinned.text, expected.text)

  const here = await resolver.generate({ model: 'tiny', prompt: 'hello world', maxTokens: 4, policy: 'cloud-allowed' })
  assert.equal(here.route.privacy, 'local')
  assert.deepEqual((await resolver.models({ policy: 'cloud-allowed' })).map((m) => [m.id, m.privacy]), [['tiny', 'local'], ['remote/cloudy', 'cloud']])
})

test('a model too large to run here, with no peers and no cloud copy: a typed error naming each provider\'s reason', async () => {
  const resolver = resolverWith({ localMaxModelBytes: 1 })
  await assert.rejects(resolver.generate({ model: 'tiny', prompt: 'hi', maxTokens: 2, policy: 'cloud-allowed' }), (err: unknown) => {
    assert.ok(err instanceof NoProviderError)
    assert.equal(err.code, 'ERR_NO_PROVIDER')
    assert.match(err.reasons.local, /more than the local limit of 1 \(providers.localMaxModelBytes\)/)
    assert.match(err.reasons.mesh, /no peer, connected or announced on the DHT, may serve layers of tiny/)
    assert.match(err.reasons.remote, /offers no model "tiny"/)
    return true
  })
  await assert.rejects(resolver.generate({ model: 'tiny', prompt: 'hi', maxTokens: 2, policy: 'team-mesh' }), codeOf('ERR_INVALID_INPUT', /needs a team/))
  await assert.rejects(resolver.generate({ model: 'tiny', prompt: 'hi', maxTokens: 2, policy: 'team-mesh', team: 'ab'.repeat(32) }), codeOf('ERR_UNKNOWN_TEAM'))
})

test('without a remote section nothing is sent anywhere: cloud-allowed says no remote is configured', async () => {
  const resolver = createNodeProviders({ node: client, env: {} })
  await assert.rejects(resolver.generate({ model: 'cloudy', prompt: 'hi', maxTokens: 2, policy: 'cloud-allowed' }), (err: unknown) => {
    assert.ok(err instanceof NoProviderError)
    assert.match(err.reasons.remote, /no remote API configured/)
    return true
  })
})
