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
  const appKeys = keys.filter((k) => !k.startsWith(`${settings.REDIS_KEY_PREFIX}:{_caller:`))
  t.ok(appKeys.every((k) => k.startsWith(`${settings.REDIS_KEY_PREFIX}:{${APP_ID}}:`)), 'every key of the app shares its hash tag (the caller\'s counter has its own)')
  const pttl = await client.pttl(key)
  const expected = Number(envelope.data!.expiresAt) * 1000 - Date.now()
  t.ok(Math.abs(pttl - expected) < 2000, `PTTL ${pttl} matches expiresAt (${expected})`)
  const values = await Promise.all(keys.map(async (k) => await client.get(k)))
  t.notMatch(values.join(' '), APP_SECRET)
  t.notMatch(keys.join(), APP_SECRET)
})

t.test('a Redis outage under load: warm apps keep being served, cold ones by mode, and all recovers by itself', async (t) => {
  const outageRedis = await RedisServer.start()
  t.teardown(() => outageRedis.stop())
  const warmApps = Array.from({ length: 20 }, (_, i) => `wx${String(i).padStart(16, 'a')}`)
  for (const mode of ['stable', 'classic']) {
    const { mock, url } = await startMock(t, { apps: Object.fromEntries([APP_ID, ...warmApps].map((id) => [id, APP_SECRET])) })
    const env = { REDIS_URL: outageRedis.url, REDIS_KEY_PREFIX: `outage-${mode}`, WECHAT_TOKEN_MODE: mode, REDIS_COMMAND_TIMEOUT_MS: '300' }
    const fleet = [(await build(t, { upstream: url, env })).app, (await build(t, { upstream: url, env })).app]
    for (const app of fleet) {
      for (const appId of warmApps) t.equal((await post(app, ROUTE, { appId, appSecret: APP_SECRET })).body.statusCode, 200)
    }
    const issuedBefore = warmApps.reduce((n, id) => n + mock.issued(id), 0)

    const run = { stop: false }
    let requests = 0
    const failures = new Map<number, number>()
    const load = Promise.all(fleet.map(async (app) => {
      for (let i = 0; !run.stop; i++) {
        const { body: envelope } = await post(app, ROUTE, { appId: warmApps[i % warmApps.length]!, appSecret: APP_SECRET })
        requests++
        if (envelope.statusCode !== 200) failures.set(envelope.apiCode ?? 0, (failures.get(envelope.apiCode ?? 0) ?? 0) + 1)
        await sleep(2)
      }
    }))
    await sleep(200)
    await outageRedis.stop()
    await sleep(200)
    const ready = await fleet[0]!.inject({ method: 'GET', url: '/health/ready' })
    t.equal(ready.statusCode, 200, `${mode}: still ready, as it still serves`)
    t.match(ready.json(), { status: 'degraded', storeUp: false }, `${mode}: and says the store is down`)
    const cold = await post(fleet[1]!, ROUTE, body)
    if (mode === 'stable') {
      t.equal(cold.body.statusCode, 200, 'stable: a cold app is fetched directly')
      t.equal(mock.check(cold.body.data!.accessToken), 'valid')
    } else {
      t.equal(cold.body.apiCode, ApiCodes.STORE_UNAVAILABLE.apiCode, 'classic: a cold app gets 503 rather than a fetch that would retire other instances\' token')
      t.equal(cold.body.statusCode, 503)
      t.equal(mock.calls('token', APP_ID), 0)
    }
    await sleep(200)
    await outageRedis.restart()
    let recovered = false
    for (let i = 0; i < 60 && !recovered; i++) {
      await sleep(100)
      recovered = (await fleet[0]!.inject({ method: 'GET', url: '/health/ready' })).json().status === 'ready'
    }
    run.stop = true
    await load
    t.ok(requests > 100, `${mode}: ${requests} requests for warm apps across the outage`)
    t.same(Object.fromEntries(failures), {}, `${mode}: no failure for warm apps`)
    t.equal(warmApps.reduce((n, id) => n + mock.issued(id), 0), issuedBefore, `${mode}: warm apps cost no upstream call`)
    t.ok(recovered, `${mode}: ready again without a restart`)
    const after = await post(fleet[0]!, ROUTE, { appId: 'wxbbbbbbbbbbbbbbbb', appSecret: APP_SECRET })
    t.equal(after.body.apiCode, ApiCodes.WECHAT_INVALID_APPID.apiCode, `${mode}: the store path works again (an unknown app reaches WeChat)`)
  }
})

t.test('the service starts while Redis is down and becomes ready when it comes up', async (t) => {
  const late = await RedisServer.start()
  await late.stop()
  t.teardown(() => late.stop())
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { REDIS_URL: late.url, REDIS_CONNECT_TIMEOUT_MS: '300' } })
  const down = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(down.statusCode, 200, 'ready to serve what it can')
  t.match(down.json(), { status: 'degraded', storeUp: false })
  await late.restart()
  let ready = false
  for (let i = 0; i < 60 && !ready; i++) {
    await sleep(100)
    ready = (await app.inject({ method: 'GET', url: '/health/ready' })).json().status === 'ready'
  }
  t.ok(ready)
  t.equal((await post(app, ROUTE, body)).body.statusCode, 200)
})
