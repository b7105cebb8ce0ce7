import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { loadConfig } from '../src/config.js'
import { createRedisClient } from '../src/plugins/store.js'
import { createRedisStore } from '../src/store/redis-store.js'
import { APP_SECRET, build, post, startMock } from './helpers/build.js'
import { RedisCluster, RedisSentinelSet } from './helpers/redis-topologies.js'
import { storeContract } from './helpers/store-contract.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const appIdFor = (i: number) => `wx${i.toString(16).padStart(16, 'b')}`

const cluster = await RedisCluster.start()
t.teardown(() => cluster.stop())
const sentinels = await RedisSentinelSet.start()
t.teardown(() => sentinels.stop())
let prefixes = 0

const topologies = {
  cluster: () => ({ REDIS_CLUSTER_NODES: cluster.seeds }),
  sentinel: () => ({ REDIS_SENTINELS: sentinels.sentinels, REDIS_SENTINEL_NAME: RedisSentinelSet.NAME })
}

for (const [name, env] of Object.entries(topologies)) {
  storeContract(t, name, async (tt, clock) => {
    const client = createRedisClient(loadConfig(env()))!
    await client.connect()
    const store = createRedisStore(client, `contract${++prefixes}`, { now: clock.now })
    tt.teardown(async () => {
      await store.close()
      client.disconnect()
    })
    await sleep(100)
    return store
  })

  t.test(`${name}: 500 concurrent requests over 3 instances, per app one token, apps on every node`, async (t) => {
    const { mock, url } = await startMock(t, { autoRegister: true })
    mock.inject({ fault: { kind: 'latency', ms: 100 } })
    const shared = { ...env(), REDIS_KEY_PREFIX: `flight${++prefixes}`, WECHAT_TOKEN_MODE: 'classic' }
    const apps = [(await build(t, { upstream: url, env: shared })).app, (await build(t, { upstream: url, env: shared })).app, (await build(t, { upstream: url, env: shared })).app]
    const appIds = [0, 1, 2, 3, 4].map(appIdFor)
    const answers = await Promise.all(Array.from({ length: 500 }, async (_, i) =>
      await post(apps[i % 3]!, ROUTE, { appId: appIds[i % appIds.length]!, appSecret: APP_SECRET })))
    t.ok(answers.every((a) => a.body.statusCode === 200), 'all 500 answered with a token')
    for (const appId of appIds) {
      t.equal(mock.issued(appId), 1, `${appId}: one token issued`)
      t.equal(new Set(answers.filter((_, i) => i % appIds.length === appIds.indexOf(appId)).map((a) => a.body.data?.accessToken)).size, 1)
    }
    if (name === 'cluster') {
      const owners = new Set<number>()
      for (const node of cluster.nodes) {
        const client = new Redis(node.port, '127.0.0.1')
        const keys = await client.keys(`${shared.REDIS_KEY_PREFIX}:*:token`)
        client.disconnect()
        if (keys.length > 0) owners.add(node.port)
      }
      t.ok(owners.size >= 2, `tokens live on ${owners.size} of 3 masters, and every multi-key script ran there`)
    }
  })
}

t.test('sentinel failover: tokens keep being served, nothing written before it is lost, writes resume', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  const env = { ...topologies.sentinel(), REDIS_KEY_PREFIX: `failover${++prefixes}`, HOT_CACHE_MS: '0', REDIS_COMMAND_TIMEOUT_MS: '500' }
  const { app } = await build(t, { upstream: url, env })
  const warm = [0, 1, 2].map((i) => appIdFor(100 + i))
  const before = new Map<string, string>()
  for (const appId of warm) before.set(appId, (await post(app, ROUTE, { appId, appSecret: APP_SECRET })).body.data!.accessToken)
  await sleep(200)

  const failover = sentinels.failover()
  let failures = 0
  let served = 0
  const run = { done: false }
  failover.finally(() => { run.done = true }).catch(() => {})
  while (!run.done) {
    for (const appId of warm) {
      const { body } = await post(app, ROUTE, { appId, appSecret: APP_SECRET })
      if (body.data?.accessToken === before.get(appId)) served++
      else failures++
    }
    await sleep(50)
  }
  await failover
  t.equal(failures, 0, `during the failover ${served} requests for warm apps were all answered with their token`)

  let written = false
  for (let i = 0; i < 100 && !written; i++) {
    written = (await post(app, ROUTE, { appId: appIdFor(200), appSecret: APP_SECRET })).body.statusCode === 200
    if (!written) await sleep(100)
  }
  t.ok(written, 'a new app is fetched and stored on the promoted primary')
  const promoted = new Redis(sentinels.replica.port, '127.0.0.1')
  t.teardown(() => promoted.disconnect())
  for (const appId of warm) {
    t.ok(await promoted.get(`${env.REDIS_KEY_PREFIX}:{${appId}}:token`), `${appId}: its token was replicated before the failover`)
  }
  const issuedBefore = warm.reduce((n, id) => n + mock.issued(id), 0)
  for (const appId of warm) t.equal((await post(app, ROUTE, { appId, appSecret: APP_SECRET })).body.data?.accessToken, before.get(appId))
  t.equal(warm.reduce((n, id) => n + mock.issued(id), 0), issuedBefore, 'read from the promoted primary, not fetched again')
})
