import t from 'tap'
import { existsSync } from 'node:fs'
import { loadConfig } from '../src/config.js'
import { createRedisClient } from '../src/plugins/store.js'
import { createMemoryStore } from '../src/store/memory-store.js'
import { appKey, createRedisStore, tokenKey } from '../src/store/redis-store.js'
import { APP_ID, APP_SECRET, TestClock } from './helpers/build.js'
import { entry, storeContract } from './helpers/store-contract.js'
import { RedisServer } from './helpers/redis-server.js'

storeContract(t, 'memory', async (t, clock) => {
  const store = createMemoryStore(clock.now)
  t.teardown(() => store.close())
  return store
})

const redisServer = await RedisServer.start()
t.teardown(() => redisServer.stop())
let prefixes = 0

// The client the service makes (auto-pipelining on); the Cluster and Sentinel runs are in topologies.test.ts.
storeContract(t, 'redis', async (t, clock) => {
  const client = createRedisClient(loadConfig({ REDIS_URL: redisServer.url }))!
  await client.connect()
  const store = createRedisStore(client, `test${++prefixes}`, { now: clock.now })
  t.teardown(async () => {
    await store.close()
    client.disconnect()
  })
  await new Promise((resolve) => setTimeout(resolve, 50))
  return store
})

t.test('redis: one notify wakes waiters on every instance', async (t) => {
  const stores = [0, 1, 2].map(() => {
    const client = redisServer.client()
    const store = createRedisStore(client, 'fanout')
    t.teardown(async () => {
      await store.close()
      client.disconnect()
    })
    return store
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const started = Date.now()
  const waits = stores.map(async (store) => await store.waitForChange(APP_ID, 5000))
  await stores[0]!.notify(APP_ID)
  await Promise.all(waits)
  t.ok(Date.now() - started < 2000, `all woken after ${Date.now() - started} ms`)
})

t.test('redis: hash-tagged keys, TTL of the token, no secret anywhere', async (t) => {
  const client = redisServer.client()
  const clock = new TestClock()
  const store = createRedisStore(client, 'wxtoken', { now: clock.now })
  t.teardown(async () => {
    await store.close()
    client.disconnect()
  })
  await store.compareAndSet(APP_ID, entry(clock, 7200_000, 1), 0)
  await store.acquire(APP_ID, 'lock', 'owner', 10_000)
  const key = tokenKey('wxtoken', APP_ID)
  t.equal(key, `wxtoken:{${APP_ID}}:token`)
  t.equal(appKey('wxtoken', APP_ID, 'lock'), `wxtoken:{${APP_ID}}:lock`)
  const pttl = await client.pttl(key)
  t.ok(pttl > 7199_000 && pttl <= 7200_000, `PTTL ${pttl} follows the token's expiry`)
  const keys = await client.keys('wxtoken:*')
  t.ok(keys.every((k) => k.startsWith(`wxtoken:{${APP_ID}}:`)), 'every key of the app shares its hash tag')
  const values = await Promise.all(keys.map(async (k) => await client.get(k)))
  t.notMatch(keys.join(' '), APP_SECRET)
  t.notMatch(values.join(' '), APP_SECRET)
})

t.test('redis: a foreign or corrupted value is a miss, not a crash', async (t) => {
  const client = redisServer.client()
  const store = createRedisStore(client, 'corrupt')
  t.teardown(async () => {
    await store.close()
    client.disconnect()
  })
  for (const raw of ['not json', '42', '{"accessToken":1}', 'null']) {
    await client.set(tokenKey('corrupt', APP_ID), raw)
    t.equal(await store.get(APP_ID), null, raw)
  }
})

t.test('a test redis-server writes its files in its own directory, never in the project', async (t) => {
  const client = redisServer.client()
  t.teardown(() => client.disconnect())
  const dir = await client.config('GET', 'dir') as string[]
  t.not(dir[1], process.cwd(), 'not the working directory of the tests')
  await client.save()
  t.notOk(existsSync('dump.rdb'), 'no dump.rdb in the project')
})
