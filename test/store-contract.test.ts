import t from 'tap'
import type { Redis } from 'ioredis'
import { createMemoryStore } from '../src/store/memory-store.js'
import { createRedisStore, tokenKey } from '../src/store/redis-store.js'
import type { TokenEntry, TokenStore } from '../src/store/types.js'
import { fingerprint } from '../src/fingerprint.js'
import { APP_ID, APP_SECRET, TestClock, type Teardown } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'

function entry (clock: TestClock, lifeMs: number, token = 'tok_' + 'a'.repeat(120)): TokenEntry {
  return {
    accessToken: token,
    expiresAt: clock.now() + lifeMs,
    mode: 'stable',
    secretFingerprint: fingerprint(APP_ID, APP_SECRET),
    fetchedAt: clock.now()
  }
}

/** One contract, every store. */
function contract (name: string, make: (t: Teardown, clock: TestClock) => Promise<TokenStore>) {
  t.test(`${name} store contract`, async (t) => {
    t.test('a miss is null', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.get(APP_ID), null)
    })

    t.test('set then get returns the same entry', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      const stored = entry(clock, 60_000)
      await store.set(APP_ID, stored)
      t.same(await store.get(APP_ID), stored)
      t.equal(await store.get('wxffffffffffffffff'), null, 'entries are per appId')
    })

    t.test('an entry is gone once its token expires', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      await store.set(APP_ID, entry(clock, 300))
      t.ok(await store.get(APP_ID))
      await new Promise((resolve) => setTimeout(resolve, 400))
      t.equal(await store.get(APP_ID), null)
    })

    t.test('an already expired entry is not stored', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      await store.set(APP_ID, entry(clock, -1))
      t.equal(await store.get(APP_ID), null)
    })

    t.test('set replaces, delete removes', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      await store.set(APP_ID, entry(clock, 60_000, 'first'))
      await store.set(APP_ID, entry(clock, 60_000, 'second'))
      t.equal((await store.get(APP_ID))?.accessToken, 'second')
      await store.delete(APP_ID)
      t.equal(await store.get(APP_ID), null)
    })

    t.test('ping answers', async (t) => {
      const store = await make(t, new TestClock())
      await t.resolves(store.ping())
    })
  })
}

contract('memory', async (t, clock) => {
  const store = createMemoryStore(clock.now)
  t.teardown(() => store.close())
  return store
})

const redisServer = await RedisServer.start()
t.teardown(() => redisServer.stop())
let prefixes = 0

contract('redis', async (t, clock) => {
  const client = redisServer.client()
  t.teardown(() => client.disconnect())
  return createRedisStore(client, `test${++prefixes}`, clock.now)
})

t.test('redis: hash-tagged key, TTL of the token, no secret anywhere', async (t) => {
  const client: Redis = redisServer.client()
  t.teardown(() => client.disconnect())
  const clock = new TestClock()
  const store = createRedisStore(client, 'wxtoken', clock.now)
  await store.set(APP_ID, entry(clock, 7200_000))
  const key = tokenKey('wxtoken', APP_ID)
  t.equal(key, `wxtoken:{${APP_ID}}:token`)
  const pttl = await client.pttl(key)
  t.ok(pttl > 7199_000 && pttl <= 7200_000, `PTTL ${pttl} follows the token's expiry`)
  const keys = await client.keys('*')
  const values = await Promise.all(keys.map(async (k) => await client.get(k)))
  t.notMatch(keys.join(' '), APP_SECRET)
  t.notMatch(values.join(' '), APP_SECRET)
})

t.test('redis: a foreign or corrupted value is a miss, not a crash', async (t) => {
  const client = redisServer.client()
  t.teardown(() => client.disconnect())
  const store = createRedisStore(client, 'corrupt')
  for (const raw of ['not json', '42', '{"accessToken":1}', 'null']) {
    await client.set(tokenKey('corrupt', APP_ID), raw)
    t.equal(await store.get(APP_ID), null, raw)
  }
})
