import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_ID, APP_SECRET, OTHER_SECRET, build, post, startMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

const redis = await RedisServer.start()
t.teardown(() => redis.stop())
let prefixes = 0

async function storeReads (): Promise<number> {
  const client = redis.client()
  const stats = await client.info('commandstats')
  client.disconnect()
  return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0)
}

t.test('the hot cache answers repeated requests without reading Redis', async (t) => {
  const { url } = await startMock(t)
  for (const [hotMs, maxReads] of [['2000', 5], ['0', 100]] as const) {
    const { app } = await build(t, { upstream: url, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}`, HOT_CACHE_MS: hotMs } })
    await post(app, ROUTE, body)
    const before = await storeReads()
    for (let i = 0; i < 100; i++) t.equal((await post(app, ROUTE, body)).body.statusCode, 200)
    const reads = await storeReads() - before
    t.ok(hotMs === '0' ? reads >= maxReads : reads <= maxReads, `HOT_CACHE_MS=${hotMs}: ${reads} Redis GETs for 100 requests`)
  }
})

t.test('a wrong secret is never answered from the hot cache', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}` } })
  const good = await post(app, ROUTE, body)
  const wrong = await post(app, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.not(wrong.body.statusCode, 200)
  t.notOk(wrong.body.data)
  t.equal(mock.calls('stable_token'), 2, 'it went the checked way (one upstream check)')
  t.equal((await post(app, ROUTE, body)).body.data?.accessToken, good.body.data?.accessToken)
})

t.test('when one instance replaces a token, the others drop their hot copy at once', async (t) => {
  const { url } = await startMock(t)
  const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}`, HOT_CACHE_MS: '60000' }
  const a = (await build(t, { upstream: url, env })).app
  const b = (await build(t, { upstream: url, env })).app
  t.ok(await until(() => a.store.pubsubUp && b.store.pubsubUp), 'both instances subscribed')
  const old = (await post(a, ROUTE, body)).body.data!.accessToken
  t.equal((await post(a, ROUTE, body)).body.data?.accessToken, old, 'A serves it from its hot cache')
  const replaced = await post(b, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: old })
  const fresh = replaced.body.data!.accessToken
  t.not(fresh, old, 'B replaced it')
  let seen = ''
  const started = Date.now()
  while (Date.now() - started < 2000) {
    seen = (await post(a, ROUTE, body)).body.data!.accessToken
    if (seen === fresh) break
    await sleep(5)
  }
  t.equal(seen, fresh, `A serves the new token ${Date.now() - started} ms after B replaced it, not after HOT_CACHE_MS (60 s)`)
})
