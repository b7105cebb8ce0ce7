import t from 'tap'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { loadConfig } from '../src/config.js'
import { createRedisClient } from '../src/plugins/store.js'
import { createMemoryStore } from '../src/store/memory-store.js'
import { appKey, createRedisStore, tokenKey } from '../src/store/redis-store.js'
import { APP_ID, APP_SECRET, TestClock } from './helpers/build.js'
import { entry, storeContract } from './helpers/store-contract.js'
import { RedisServer } from './helpers/redis-server.js'

storeContract(t, 'memory', async (t, clock) => {
  // Few small values, so that the contract shows a kept value is never dropped to make room.
  const store = createMemoryStore(clock.now, { maxValues: 100 })
  t.teardown(() => store.close())
  return store
})

const redisServer = await RedisServer.start()
t.teardown(() => redisServer.stop())
let prefixes = 0

// The client the service makes (one socket write per event-loop turn); the Cluster and Sentinel runs are in topologies.test.ts.
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

t.test('redis: the scripts go by their SHA once loaded, and whole again after SCRIPT FLUSH, with the least rights docs/security.md lists', async (t) => {
  const own = await RedisServer.start() // its own server: SCRIPT FLUSH and the command counts are server-wide
  t.teardown(() => own.stop())
  const admin = own.client()
  t.teardown(() => admin.disconnect())
  const rule = /`(ACL SETUSER wxtoken [^`]+)`/.exec(await readFile(new URL('../docs/security.md', import.meta.url), 'utf8'))?.[1]
  t.ok(rule, 'docs/security.md gives the rule')
  await admin.call('ACL', 'SETUSER', ...rule!.replace('<password>', 'scripts-password-0123').split(' ').slice(2))
  const client = createRedisClient(loadConfig({ REDIS_URL: `redis://wxtoken:scripts-password-0123@127.0.0.1:${own.port}` }))!
  await client.connect()
  const clock = new TestClock()
  const store = createRedisStore(client, 'wxtoken', { now: clock.now })
  t.teardown(async () => {
    await store.close()
    client.disconnect()
  })
  const counts = async () => {
    const info = `${await admin.info('commandstats')}\n${await admin.info('errorstats')}`
    const count = (pattern: RegExp): number => Number(pattern.exec(info)?.[1] ?? 0)
    return { eval: count(/^cmdstat_eval:calls=(\d+)/m), evalsha: count(/^cmdstat_evalsha:calls=(\d+)/m), noscript: count(/^errorstat_NOSCRIPT:count=(\d+)/m) }
  }
  /** Runs each script once, as generation `generation` is written. */
  const round = async (generation: number) => {
    t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, generation, `token${generation}`), generation - 1), true, `generation ${generation} written`)
    t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, generation, 'stale'), generation - 1), false, 'a stale write refused')
    t.equal(await store.acquire(APP_ID, 'lock', 'owner', 10_000), true)
    t.equal(await store.release(APP_ID, 'lock', 'other'), false, 'another owner releases nothing')
    t.equal(await store.release(APP_ID, 'lock', 'owner'), true)
    t.equal(await store.increment(APP_ID, 'count', 10_000), generation, 'the counter counts on')
    t.equal((await store.get(APP_ID))?.accessToken, `token${generation}`)
  }

  await round(1)
  const loaded = await counts()
  t.equal(loaded.eval, 3, 'each script sent whole once')
  await round(2)
  const after = await counts()
  t.equal(after.eval, loaded.eval, 'then never whole again')
  t.equal(after.evalsha - loaded.evalsha, 5, 'but by its SHA, each of the round\'s five calls')

  await admin.script('FLUSH')
  await round(3)
  const flushed = await counts()
  t.equal(flushed.noscript - after.noscript, 3, 'after the flush each script was unknown once')
  t.equal(flushed.eval - after.eval, 3, 'and sent whole again (EVAL, which the rule allows; SCRIPT LOAD it does not)')
  await round(4)
  t.equal((await counts()).eval, flushed.eval, 'then by its SHA again')
})

t.test('a test redis-server writes its files in its own directory, never in the project', async (t) => {
  const client = redisServer.client()
  t.teardown(() => client.disconnect())
  const dir = await client.config('GET', 'dir') as string[]
  t.not(dir[1], process.cwd(), 'not the working directory of the tests')
  await client.save()
  t.notOk(existsSync('dump.rdb'), 'no dump.rdb in the project')
})
