import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, build, post, startMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

const redis = await RedisServer.start()
t.teardown(() => redis.stop())
let prefixes = 0

function env (extra: Record<string, string> = {}) {
  return { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `app${++prefixes}`, ...extra }
}

t.test('two instances share one token through Redis', async (t) => {
  const { mock, url } = await startMock(t)
  const shared = env({ WECHAT_TOKEN_MODE: 'classic' })
  const a = await build(t, { upstream: url, env: shared })
  const b = await build(t, { upstream: url, env: shared })
  const fromA = await post(a.app, ROUTE, body)
  const fromB = await post(b.app, ROUTE, body)
  t.equal(fromA.body.statusCode, 200)
  t.equal(fromB.body.data?.accessToken, fromA.body.data?.accessToken, 'the second instance reads the first one\'s token')
  t.equal(mock.issued(APP_ID), 1, 'one classic fetch for both instances')
  t.equal(mock.check(fromB.body.data!.accessToken), 'valid')

  const wrong = await post(b.app, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(wrong.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'a differing secret is checked with WeChat')
  const remembered = await post(a.app, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(remembered.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'and the refusal is shared by every instance')
  t.equal(mock.calls('token'), 2, 'one check for both instances')
  t.equal(mock.issued(APP_ID), 1)
})

t.test('the Redis entry expires with the token and holds no secret', async (t) => {
  const { url } = await startMock(t)
  const settings = env()
  const { app } = await build(t, { upstream: url, env: settings })
  const { body: envelope } = await post(app, ROUTE, body)
  const client = redis.client()
  t.teardown(() => client.disconnect())
  const keys = await client.keys(`${settings.REDIS_KEY_PREFIX}:*`)
  const key = `${settings.REDIS_KEY_PREFIX}:{${APP_ID}}:token`
  t.ok(keys.includes(key))
  t.ok(keys.every((k) => k.startsWith(`${settings.REDIS_KEY_PREFIX}:{${APP_ID}}:`)), 'every key shares the app\'s hash tag')
  const pttl = await client.pttl(key)
  const expected = Number(envelope.data!.expiresAt) * 1000 - Date.now()
  t.ok(Math.abs(pttl - expected) < 2000, `PTTL ${pttl} matches expiresAt (${expected})`)
  const values = await Promise.all(keys.map(async (k) => await client.get(k)))
  t.notMatch(values.join(' '), APP_SECRET)
  t.notMatch(keys.join(), APP_SECRET)
})

t.test('a Redis outage: readiness reports it, requests get a 503 envelope, and all recovers by itself', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: env({ REDIS_COMMAND_TIMEOUT_MS: '300' }) })
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
  t.equal((await post(app, ROUTE, body)).body.statusCode, 200)

  await redis.stop()
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { status: 'unavailable', store: 'redis' })
  const down = await post(app, ROUTE, body)
  t.equal(down.res.statusCode, 200)
  t.equal(down.body.apiCode, ApiCodes.STORE_UNAVAILABLE.apiCode)
  t.equal(down.body.statusCode, 503)

  await redis.restart()
  let recovered = false
  for (let i = 0; i < 60 && !recovered; i++) {
    await sleep(100)
    recovered = (await app.inject({ method: 'GET', url: '/health/ready' })).statusCode === 200
  }
  t.ok(recovered, 'ready again without a restart')
  t.equal((await post(app, ROUTE, body)).body.statusCode, 200)
})

t.test('the service starts while Redis is down and becomes ready when it comes up', async (t) => {
  const late = await RedisServer.start()
  await late.stop()
  t.teardown(() => late.stop())
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { REDIS_URL: late.url, REDIS_CONNECT_TIMEOUT_MS: '300' } })
  t.equal((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode, 503)
  await late.restart()
  let ready = false
  for (let i = 0; i < 60 && !ready; i++) {
    await sleep(100)
    ready = (await app.inject({ method: 'GET', url: '/health/ready' })).statusCode === 200
  }
  t.ok(ready)
  t.equal((await post(app, ROUTE, body)).body.statusCode, 200)
})
