/** Quota and lock-out: what a caller who proves nothing (an appId, a secret not yet verified) can make the service spend. */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, build, startMock, type Envelope } from './helpers/build.js'
import { fleet as fleetOf, fleetRedis } from './helpers/fleet.js'
import { RedisServer } from './helpers/redis-server.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const HOUR = 3600_000

const { redis, fleet } = await fleetRedis(t)

const randomSecret = (): string => randomBytes(16).toString('hex')
const randomAppId = (): string => `wx${randomBytes(8).toString('hex')}`

/** A POST from a given client address (the caller identity when there are no caller keys). */
async function from (app: FastifyInstance, ip: string, url: string, payload: unknown, headers: Record<string, string> = {}): Promise<Envelope> {
  const res = await app.inject({ method: 'POST', url, remoteAddress: ip, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(payload) })
  return res.json() as Envelope
}

t.test('wrong secrets for a cold app: bounded per caller, and the right secret from another caller is served at once', async (t) => {
  for (const mode of ['stable', 'classic']) {
    const { mock, url } = await startMock(t)
    const { apps } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: mode })
    const endpoint = mode === 'classic' ? 'token' : 'stable_token'
    const answers = await Promise.all(Array.from({ length: 40 }, async (_, i) =>
      await from(apps[i % 2]!, '10.0.0.1', ROUTE, { appId: APP_ID, appSecret: randomSecret() })))
    t.ok(mock.calls(endpoint) <= 5, `${mode}: 40 different wrong secrets from one caller made ${mock.calls(endpoint)} upstream calls`)
    t.ok(answers.every((a) => a.statusCode !== 200 && !a.data), `${mode}: none got a token`)
    const limited = answers.filter((a) => a.apiCode === ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode)
    t.ok(limited.length >= 35, `${mode}: the rest were refused locally with 4005 (${limited.length})`)
    t.equal(limited[0]?.statusCode, 429)
    const right = await from(apps[1]!, '10.0.0.2', ROUTE, body)
    t.equal(right.statusCode, 200, `${mode}: the right secret from another caller is served`)
    t.equal(mock.check(right.data!.accessToken), 'valid')
  }
})

t.test('many callers with random secrets cannot spend the token budget: a known-good secret is still served', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 1, url, { DAILY_UPSTREAM_BUDGET: '3', UNVERIFIED_DAILY_BUDGET: '10', REFRESH_AHEAD_SECONDS: '600' })
  // The two hours moved on below stay within one budget day (counted from 00:00 Beijing time), whenever the test runs.
  clock.toEarlyBeijingDay()
  const app = apps[0]!
  t.equal((await from(app, '10.0.1.1', ROUTE, body)).statusCode, 200, 'the owner got a token: its secret is now known to be right')
  clock.advance(2 * HOUR)
  mock.advance(2 * HOUR)
  const before = mock.calls('stable_token')
  for (let i = 0; i < 200; i++) await from(app, `10.1.${i >> 8}.${i & 255}`, ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(mock.calls('stable_token') - before, 9, '200 callers with random secrets: only what was left of the unverified allowance (10, one used by the owner\'s first check) reached WeChat')
  const owner = await from(app, '10.0.1.1', ROUTE, body)
  t.equal(owner.statusCode, 200, 'the owner\'s known secret is served: the token budget was not touched')
  const stranger = await from(app, '10.9.9.9', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(stranger.apiCode, ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode, 'a new unverified secret now waits for tomorrow')
})

t.test('a remembered refusal stays bounded: a thousand different wrong secrets leave small keys only', async (t) => {
  const { url } = await startMock(t)
  const { apps, env } = await fleet(t, 1, url, { UNVERIFIED_CHECKS_PER_APP: '1000', UNVERIFIED_CHECKS_PER_CALLER: '1000', UNVERIFIED_DAILY_BUDGET: '1000' })
  for (let i = 0; i < 300; i++) await from(apps[0]!, '10.0.2.1', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  const client = redis.client()
  t.teardown(() => client.disconnect())
  const keys = await client.keys(`${env.REDIS_KEY_PREFIX}:*`)
  let largest = 0
  for (const key of keys) largest = Math.max(largest, Number(await client.memory('USAGE', key)))
  t.ok(largest < 1024, `the largest key holds ${largest} bytes`)
  for (const key of keys) t.ok(await client.pttl(key) > 0, `${key} expires`)
})

t.test('the refresh route never spends a forced refresh for a secret that is not the current token\'s', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 1, url)
  const wrong = await from(apps[0]!, '10.0.3.1', REFRESH, { appId: APP_ID, appSecret: OTHER_SECRET, accessToken: 'reported-token' })
  t.equal(wrong.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'a cold app: the secret is checked by a normal fetch, and refused')
  t.equal(mock.forcedCalls(APP_ID), 0, 'no force_refresh was sent')
  const first = await from(apps[0]!, '10.0.3.1', REFRESH, { ...body, accessToken: 'reported-token' })
  t.equal(first.statusCode, 200, 'the right secret on a cold app gets the current token')
  t.equal(mock.forcedCalls(APP_ID), 0, 'by a normal fetch: the reported token was not the current one')
  const stranger = await from(apps[0]!, '10.0.3.2', REFRESH, { appId: APP_ID, appSecret: randomSecret(), accessToken: first.data!.accessToken })
  t.not(stranger.statusCode, 200)
  t.equal(mock.forcedCalls(APP_ID), 0, 'a wrong secret reporting the current token forces nothing')
  const owner = await from(apps[0]!, '10.0.3.1', REFRESH, { ...body, accessToken: first.data!.accessToken })
  t.equal(owner.statusCode, 200)
  t.equal(mock.forcedCalls(APP_ID), 1, 'the owner reporting the current token forces one refresh')
})

t.test('every upstream attempt counts against the budget, retries included', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 1, url, { DAILY_UPSTREAM_BUDGET: '3', UNVERIFIED_DAILY_BUDGET: '3', WECHAT_MAX_RETRIES: '2', REFRESH_AHEAD_SECONDS: '600' })
  clock.toEarlyBeijingDay()
  mock.inject({ fault: { kind: 'http', status: 502 } })
  for (let i = 0; i < 5; i++) await from(apps[0]!, '10.0.4.1', ROUTE, body)
  t.equal(mock.calls('stable_token'), 3, 'an unverified secret: 3 attempts in all, not 3 fetches of 3 attempts')
  mock.clearFaults()
  clock.advance(24 * HOUR)
  mock.advance(24 * HOUR)
  t.equal((await from(apps[0]!, '10.0.4.2', ROUTE, body)).statusCode, 200, 'the next day (another caller: the first used its checks) the secret is verified')
  clock.advance(2 * HOUR)
  mock.advance(2 * HOUR)
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const before = mock.calls('stable_token')
  const answers: Envelope[] = []
  for (let i = 0; i < 5; i++) answers.push(await from(apps[0]!, '10.0.4.2', ROUTE, body))
  t.equal(mock.calls('stable_token') - before, 3, 'a verified secret: 3 attempts in all from the token budget of 3')
  t.equal(answers.at(-1)?.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, 'the failed fetch backed the app off')
  clock.advance(2 * 60_000)
  t.equal((await from(apps[0]!, '10.0.4.2', ROUTE, body)).apiCode, ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode, 'after the backoff, the budget is spent')
  t.equal(mock.calls('stable_token') - before, 3, 'and nothing more was sent')
})

t.test('a rotated secret: concurrent callers with the new secret share one check and are all served', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 3, url)
  const before = (await from(apps[0]!, '10.0.5.1', ROUTE, body)).data!.accessToken
  mock.setApp(APP_ID, OTHER_SECRET)
  mock.inject({ fault: { kind: 'latency', ms: 100 } })
  const rotated = await Promise.all(Array.from({ length: 6 }, async (_, i) =>
    await from(apps[i % 3]!, `10.0.5.${10 + i}`, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })))
  t.same(rotated.map((a) => a.statusCode), [200, 200, 200, 200, 200, 200], 'all six served')
  t.ok(rotated.every((a) => a.data?.accessToken === before), 'stable mode: the same token, now under the new secret')
  t.equal(mock.calls('stable_token'), 2, 'one check for all six, over three instances')

  mock.clearFaults()
  const third = randomSecret()
  mock.setApp(APP_ID, third)
  mock.inject({ fault: { kind: 'latency', ms: 200 }, times: 1 })
  const [probe, right] = await Promise.all([
    from(apps[0]!, '10.0.5.30', ROUTE, { appId: APP_ID, appSecret: randomSecret() }),
    sleep(50).then(async () => await from(apps[1]!, '10.0.5.31', ROUTE, { appId: APP_ID, appSecret: third }))
  ])
  t.equal(probe.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'a wrong probe of a new secret is refused')
  t.equal(right.statusCode, 200, 'and does not block the right new secret sent meanwhile')
})

t.test('45009 to a forced refresh blocks forced refreshes only', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 1, url, { REFRESH_AHEAD_SECONDS: '200', TOKEN_SERVE_MARGIN_SECONDS: '120' })
  const app = apps[0]!
  const t1 = (await from(app, '10.0.6.1', ROUTE, body)).data!.accessToken
  mock.inject({ fault: { kind: 'errcode', errcode: 45009 }, times: 1 })
  const forced = await from(app, '10.0.6.1', REFRESH, { ...body, accessToken: t1 })
  t.equal(forced.apiCode, ApiCodes.WECHAT_DAILY_QUOTA.apiCode, 'WeChat refused the forced refresh')
  clock.advance(2 * HOUR - 60_000)
  mock.advance(2 * HOUR - 60_000)
  const normal = await from(app, '10.0.6.1', ROUTE, body)
  t.equal(normal.statusCode, 200, 'a normal fetch is still made')
  t.not(normal.data?.accessToken, t1, 'and brings the renewed token')
  clock.advance(40_000)
  const again = await from(app, '10.0.6.1', REFRESH, { ...body, accessToken: normal.data!.accessToken })
  t.equal(again.apiCode, ApiCodes.WECHAT_DAILY_QUOTA.apiCode, 'while forced refreshes stay refused')
  t.match(again.message, /remembered/)
})

t.test('during a Redis outage a repeated wrong secret costs at most one call, and local budgets apply', async (t) => {
  const outage = await RedisServer.start()
  t.teardown(() => outage.stop())
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const warm = 'wx00000000000000c2'
  mock.setApp(warm, APP_SECRET)
  const { apps: [app] } = await fleetOf(t, outage.url, 1, url, { REDIS_COMMAND_TIMEOUT_MS: '300', DAILY_UPSTREAM_BUDGET: '2' }, clock)
  t.equal((await from(app!, '10.0.7.1', ROUTE, { appId: warm, appSecret: APP_SECRET })).statusCode, 200, 'an app this instance serves')
  await outage.stop()
  const answers: Envelope[] = []
  for (let i = 0; i < 20; i++) answers.push(await from(app!, '10.0.7.1', ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET }))
  t.equal(mock.calls('stable_token', APP_ID), 1, 'the same wrong secret 20 times: one upstream call')
  t.ok(answers.every((a) => a.apiCode === ApiCodes.WECHAT_INVALID_SECRET.apiCode), 'each refused as WeChat refused it')
  for (let i = 0; i < 10; i++) await from(app!, '10.0.7.2', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(mock.calls('stable_token', APP_ID), 6, 'different wrong secrets from one caller: its 5 checks, no more')

  clock.advance(2 * HOUR)
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const before = mock.calls('stable_token', warm)
  for (let i = 0; i < 5; i++) await from(app!, '10.0.7.1', ROUTE, { appId: warm, appSecret: APP_SECRET })
  t.equal(mock.calls('stable_token', warm) - before, 2, 'its token expired and WeChat failing: the local budget of 2 attempts, retries included')
})

t.test('random appIds: bounded upstream calls per caller, and short-lived keys', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, env } = await fleet(t, 1, url, { UNVERIFIED_CHECKS_PER_CALLER: '20' })
  const answers: Envelope[] = []
  for (let i = 0; i < 300; i++) answers.push(await from(apps[0]!, '10.0.8.1', ROUTE, { appId: randomAppId(), appSecret: APP_SECRET }))
  t.equal(mock.calls('stable_token'), 20, '300 random appIds from one caller: 20 upstream calls')
  t.equal(answers.filter((a) => a.apiCode === ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode).length, 280)
  t.equal((await from(apps[0]!, '10.0.8.2', ROUTE, body)).statusCode, 200, 'another caller is served')
  const client = redis.client()
  t.teardown(() => client.disconnect())
  const keys = await client.keys(`${env.REDIS_KEY_PREFIX}:*`)
  const ttls = await Promise.all(keys.map(async (key) => [key, await client.pttl(key)] as const))
  const long = ttls.filter(([key, ttl]) => !key.includes(APP_ID) && (ttl < 0 || ttl > HOUR))
  t.same(long, [], 'no key of an app that never got a token lives longer than an hour')
  t.ok(keys.length < 100, `${keys.length} keys for 300 random appIds`)
})

t.test('an upper-case appId is the same app', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 1, url)
  const lower = await from(apps[0]!, '10.0.9.1', ROUTE, body)
  const upper = await from(apps[0]!, '10.0.9.1', ROUTE, { appId: APP_ID.toUpperCase().replace('WX', 'wx'), appSecret: APP_SECRET })
  t.equal(upper.statusCode, 200)
  t.equal(upper.data?.accessToken, lower.data?.accessToken, 'the same token')
  t.equal(mock.calls('stable_token'), 1, 'one upstream call')
  t.same(mock.seenAppIds(), [APP_ID], 'WeChat only ever saw the lower-case appId')
})

t.test('a check refused by the per-caller limits takes no lock', async (t) => {
  const { url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url)
  for (let i = 0; i < 5; i++) await from(app!, '10.0.10.1', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  let locks = 0
  const acquire = app!.store.acquire.bind(app!.store)
  app!.store.acquire = async (...args) => { locks++; return await acquire(...args) }
  const refused = await from(app!, '10.0.10.1', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(refused.apiCode, ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode)
  t.equal(locks, 0, 'refused before the app\'s lock was asked for')
})

t.test('during a Redis outage strangers cannot lock the owner out of an instance that never served the app', async (t) => {
  const outage = await RedisServer.start()
  t.teardown(() => outage.stop())
  const { mock, url } = await startMock(t)
  const env = { REDIS_URL: outage.url, REDIS_KEY_PREFIX: 'outage-owner', REDIS_COMMAND_TIMEOUT_MS: '300', UNVERIFIED_DAILY_BUDGET: '20' }
  const served = (await build(t, { upstream: url, env })).app
  const cold = (await build(t, { upstream: url, env })).app
  t.equal((await from(served, '10.0.11.1', ROUTE, body)).statusCode, 200, 'the owner\'s secret is verified')
  await outage.stop()
  for (let i = 0; i < 60; i++) await from(cold, `10.11.0.${i}`, ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.ok(mock.calls('stable_token') <= 61, 'strangers were each limited to their own checks')
  const owner = await from(cold, '10.0.11.1', ROUTE, body)
  t.equal(owner.statusCode, 200, 'the owner is served by the instance that never served the app')
})

t.test('an IPv6 caller is counted by its /64; a check past the app\'s daily allowance takes no lock either', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url, { UNVERIFIED_DAILY_BUDGET: '8' })
  for (let i = 1; i <= 8; i++) await from(app!, `2001:db8:0:1::${i.toString(16)}`, ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(mock.calls('stable_token'), 5, 'eight addresses of one /64 are one caller: 5 checks')
  for (let i = 1; i <= 3; i++) await from(app!, `2001:db8:0:${i + 1}::1`, ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(mock.calls('stable_token'), 8, 'other /64s are other callers, up to the app\'s daily allowance of 8')
  let locks = 0
  const acquire = app!.store.acquire.bind(app!.store)
  app!.store.acquire = async (...args) => { locks++; return await acquire(...args) }
  const refused = await from(app!, '2001:db8:0:9::1', ROUTE, { appId: APP_ID, appSecret: randomSecret() })
  t.equal(refused.apiCode, ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode)
  t.match(refused.message, /allowance of 8/)
  t.equal(locks, 0, 'refused before the app\'s lock was asked for')
})

t.test('a backend with the right secrets of 500 apps on a cold store is served in full; wrong secrets from it stay bounded', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  const { apps } = await fleet(t, 2, url)
  const appIds = Array.from({ length: 500 }, (_, i) => `wx${(0xc000 + i).toString(16).padStart(16, '0')}`)
  // Each app's first call registers its secret at the stand-in: these are the right secrets.
  const answers = await Promise.all(appIds.map(async (appId, i) => await from(apps[i % 2]!, '10.0.20.1', ROUTE, { appId, appSecret: APP_SECRET })))
  const byCode = new Map<number, number>()
  for (const a of answers) byCode.set(a.apiCode ?? a.statusCode, (byCode.get(a.apiCode ?? a.statusCode) ?? 0) + 1)
  t.same(Object.fromEntries(byCode), { 200: 500 }, 'all 500 served: a check WeChat accepts costs the caller nothing')
  t.equal(mock.calls('stable_token'), 500, 'one check each')

  const wrong = await Promise.all(appIds.slice(0, 100).map(async (appId, i) =>
    await from(apps[i % 2]!, '10.0.20.1', ROUTE, { appId, appSecret: OTHER_SECRET })))
  t.equal(mock.calls('stable_token') - 500, 60, 'the same caller\'s wrong secrets: UNVERIFIED_CHECKS_PER_CALLER (60) checks, no more')
  t.equal(wrong.filter((a) => a.apiCode === ApiCodes.WECHAT_INVALID_SECRET.apiCode).length, 60)
  t.equal(wrong.filter((a) => a.apiCode === ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode).length, 40, 'the rest refused locally')
  const again = await from(apps[0]!, '10.0.20.1', ROUTE, { appId: appIds[499], appSecret: APP_SECRET })
  t.equal(again.statusCode, 200, 'and its right secrets are still served')
})
