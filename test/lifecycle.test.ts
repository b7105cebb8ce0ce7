import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes } from '../src/api-codes.js'
import { createRedisStore } from '../src/store/redis-store.js'
import { beijingDay, createTokenService } from '../src/official-account/token-service.js'
import { createWechatClient } from '../src/wechat/client.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, build, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { nextChange } from './helpers/until.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const HOUR = 3600_000

const { redis, fleet } = await fleetRedis(t)
let prefixes = 0

async function until (predicate: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await predicate()) return true
    await sleep(20)
  }
  return await predicate()
}

t.test('500 concurrent requests for a cold app over 3 instances: exactly one token issued', async (t) => {
  for (const mode of ['classic', 'stable']) {
    const { mock, url } = await startMock(t)
    mock.inject({ fault: { kind: 'latency', ms: 150 } })
    const { apps } = await fleet(t, 3, url, { WECHAT_TOKEN_MODE: mode })
    const answers = await Promise.all(Array.from({ length: 500 }, async (_, i) => await post(apps[i % 3]!, ROUTE, body)))
    t.equal(mock.issued(APP_ID), 1, `${mode}: one token issued`)
    t.equal(mock.calls(mode === 'classic' ? 'token' : 'stable_token'), 1, `${mode}: one upstream call`)
    const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
    t.equal(tokens.size, 1, `${mode}: every request got the same token`)
    t.ok(answers.every((a) => a.body.statusCode === 200), `${mode}: all 500 succeeded`)
    t.equal(mock.check([...tokens][0]!), 'valid')
  }
})

t.test('500 concurrent requests over 3 instances when the token is near expiry: exactly one new token', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 3, url, { WECHAT_TOKEN_MODE: 'classic' })
  const first = await post(apps[0]!, ROUTE, body)
  clock.advance(2 * HOUR - 60_000)
  mock.advance(2 * HOUR - 60_000)
  mock.inject({ fault: { kind: 'latency', ms: 150 } })
  const answers = await Promise.all(Array.from({ length: 500 }, async (_, i) => await post(apps[i % 3]!, ROUTE, body)))
  const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
  t.equal(mock.issued(APP_ID), 2, 'one new token for the whole fleet')
  t.equal(tokens.size, 1)
  t.not([...tokens][0], first.body.data?.accessToken)
})

/** A token service of its own on the fleet's Redis, with a lease of 200 ms (shorter than its fetches), and its log. */
async function lapsingHolder (t: Test, url: string, prefix: string) {
  const client = redis.client()
  const store = createRedisStore(client, prefix)
  const wechat = createWechatClient({
    baseUrl: url, mode: 'classic', connectTimeoutMs: 1000, headersTimeoutMs: 5000, bodyTimeoutMs: 5000, connections: 2, maxRetries: 0, retryBaseMs: 10
  })
  t.teardown(async () => {
    await store.close()
    await wechat.close()
    client.disconnect()
  })
  const service = createTokenService({
    store,
    wechat,
    serveMarginSeconds: 120,
    refreshAheadSeconds: 0,
    requestDeadlineMs: 5000,
    lockLeaseMs: 200,
    unverifiedChecksPerApp: 5,
    unverifiedChecksPerCaller: 60,
    unverifiedCheckWindowSeconds: 600,
    unverifiedDailyBudget: 100,
    negativeCacheSeconds: 300,
    dailyUpstreamBudget: 100,
    forceRefreshDailyLimit: 20,
    forceRefreshMinIntervalSeconds: 30
  })
  const logs: string[] = []
  const log = { warn: (_o: unknown, m: string) => logs.push(m), info: (_o: unknown, m: string) => logs.push(m), debug: () => {} } as never
  /** Resolves once the holder's lock on the app has lapsed (its lease ran out while it still works). */
  const lapsed = async (): Promise<void> => {
    while (await client.exists(`${prefix}:{${APP_ID}}:lock`) === 1) await sleep(20)
  }
  return { service, store, logs, log, lapsed }
}

t.test('classic mode: a holder whose lease lapsed before WeChat answered it cannot tell whose token is newer: one more fetch settles it', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, env } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic' })
  const { service, store, logs, log, lapsed } = await lapsingHolder(t, url, env.REDIS_KEY_PREFIX)
  // WeChat takes 800 ms over the holder's fetch: it issues the holder's token after the second instance's.
  mock.inject({ fault: { kind: 'latency', ms: 800 }, times: 1 })
  const late = service.getToken(APP_ID, APP_SECRET, { log, origin: 'test' })
  while (mock.calls('token') === 0) await sleep(10)
  await lapsed()
  const early = await post(apps[0]!, ROUTE, body)
  t.equal(early.body.statusCode, 200, 'a second instance took over the lapsed lock and stored a token')
  const lateResult = await late
  // The holder's request went out before the other instance's, its answer came after: either may be the newer.
  t.equal(mock.issued(APP_ID), 3, 'both fetched, and the holder once more')
  const latest = mock.issuedTokens().at(-1)
  t.equal(lateResult.accessToken, latest, 'the holder serves the token issued last')
  const stored = await store.get(APP_ID)
  t.equal(stored?.accessToken, latest, 'the store keeps it')
  t.equal(stored?.generation, 2, 'written over the other')
  t.ok(logs.some((m) => /fetched at the same time; fetching once more/.test(m)), 'and the holder says so')
  t.ok(await until(async () => (await post(apps[0]!, ROUTE, body)).body.data?.accessToken === lateResult.accessToken),
    'the other instance serves it once the change reaches it')
  mock.advance(6 * 60_000)
  t.equal(mock.check(lateResult.accessToken), 'valid', 'five minutes on, WeChat still accepts the stored token')
  t.equal(mock.check(early.body.data!.accessToken), 'expired', 'and has retired the others')
})

t.test('a holder that stalled after WeChat answered cannot write its older token over the newer one', async (t) => {
  for (const mode of ['classic', 'stable'] as const) {
    const { mock, url } = await startMock(t)
    const { apps, env } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: mode })
    const { service, store, logs, log, lapsed } = await lapsingHolder(t, url, env.REDIS_KEY_PREFIX)
    // The holder's write waits until released: it stalls after WeChat answered it, past its lease.
    const compareAndSet = store.compareAndSet.bind(store)
    let release = (): void => {}
    const released = new Promise<void>((resolve) => { release = resolve })
    let stall: (() => void) | undefined
    const stalled = new Promise<void>((resolve) => { stall = resolve })
    store.compareAndSet = async (...args) => {
      if (stall) {
        stall()
        stall = undefined
        await released
      }
      return await compareAndSet(...args)
    }
    const late = service.getToken(APP_ID, APP_SECRET, { log, origin: 'test' })
    await stalled
    await lapsed()
    // In stable mode another system forces a refresh meanwhile: WeChat's current token is then another one.
    if (mode === 'stable') mock.revokeTokens(APP_ID)
    const newer = await post(apps[0]!, ROUTE, body)
    t.equal(newer.body.statusCode, 200, `${mode}: the second instance fetched and stored the token issued last`)
    release()
    const lateResult = await late
    t.equal(mock.issued(APP_ID), 2, `${mode}: both fetched`)
    t.equal((await store.get(APP_ID))?.accessToken, newer.body.data?.accessToken, `${mode}: the store keeps the newer token`)
    t.equal(lateResult.accessToken, newer.body.data?.accessToken, `${mode}: the late holder serves the newer token, not its own`)
    t.ok(logs.some((m) => /issued later was stored while this one was fetched; the later one is kept/.test(m)), `${mode}: and says so in its log`)
    t.equal(mock.check(newer.body.data!.accessToken), 'valid')
  }
})

t.test('refresh ahead: the caller gets the current token at once, one background refresh replaces it', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: 'classic', REFRESH_AHEAD_SECONDS: '600' })
  const first = await post(apps[0]!, ROUTE, body)
  clock.advance(2 * HOUR - 300_000)
  mock.inject({ fault: { kind: 'latency', ms: 200 } })
  const started = Date.now()
  const burst = await Promise.all(Array.from({ length: 50 }, async (_, i) => await post(apps[i % 2]!, ROUTE, body)))
  t.ok(Date.now() - started < 200, 'nobody waited for WeChat')
  t.ok(burst.every((a) => a.body.data?.accessToken === first.body.data?.accessToken), 'the burst got the current token')
  t.ok(await until(() => mock.issued(APP_ID) === 2), 'a background refresh ran')
  await sleep(300)
  t.equal(mock.issued(APP_ID), 2, 'exactly one, for both instances')
  const after = await post(apps[1]!, ROUTE, body)
  t.not(after.body.data?.accessToken, first.body.data?.accessToken, 'the next caller gets the new token')
  t.ok(after.body.data!.expiresIn > 7000)
})

t.test('WECHAT_APPS: proactive refresh on one instance, only configured apps and secrets served', async (t) => {
  const second = 'wx00000000000000aa'
  const { mock, url } = await startMock(t, { apps: { [APP_ID]: APP_SECRET, [second]: OTHER_SECRET } })
  const { apps, clock } = await fleet(t, 3, url, {
    WECHAT_TOKEN_MODE: 'classic',
    WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET, [second]: OTHER_SECRET }),
    SCHEDULER_INTERVAL_SECONDS: '1'
  })
  t.ok(await until(() => mock.issued(APP_ID) === 1 && mock.issued(second) === 1), 'cold apps fetched before anyone asked')
  await sleep(1500)
  t.equal(mock.issued(APP_ID), 1, 'three instances, one fetch per app')
  t.equal(mock.issued(second), 1)

  const served = await post(apps[2]!, ROUTE, body)
  t.equal(served.body.statusCode, 200)
  t.equal(mock.calls('token'), 2, 'the caller did not wait on WeChat')

  const unknown = await post(apps[0]!, ROUTE, { appId: 'wx1111111111111111', appSecret: APP_SECRET })
  t.equal(unknown.body.apiCode, ApiCodes.APP_NOT_CONFIGURED.apiCode)
  const wrong = await post(apps[0]!, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(wrong.body.apiCode, ApiCodes.SECRET_MISMATCH.apiCode)
  t.equal(mock.calls('token'), 2, 'neither reached WeChat')

  clock.advance(2 * HOUR - 400_000)
  t.ok(await until(() => mock.issued(APP_ID) === 2 && mock.issued(second) === 2, 4000), 'due tokens refreshed ahead by the scheduler')
  await sleep(1500)
  t.equal(mock.issued(APP_ID), 2, 'once per app for the fleet')
})

t.test('WECHAT_APPS and WECHAT_APPS_FILE are validated at start', async (t) => {
  const { loadConfig } = await import('../src/config.js')
  t.throws(() => loadConfig({ WECHAT_APPS: '[1]' }), /WECHAT_APPS must be a JSON object/)
  t.throws(() => loadConfig({ WECHAT_APPS: '{"wx1":"x"}' }), /WECHAT_APPS: "wx1" is not a WeChat appId/)
  t.throws(() => loadConfig({ WECHAT_APPS: `{"${APP_ID}":"short"}` }), /secret of wx0123456789abcdef is not/)
  t.throws(() => loadConfig({ WECHAT_APPS_FILE: '/nonexistent/apps.json' }), /WECHAT_APPS_FILE cannot be read/)
  t.throws(() => loadConfig({ LOCK_LEASE_MS: '5000', REQUEST_DEADLINE_MS: '6000' }), /LOCK_LEASE_MS must exceed/)
  // A fixture directory of tap's, removed when the test ends: the file holds a secret.
  const dir = t.testdir({ 'apps.json': JSON.stringify({ [APP_ID]: APP_SECRET }) })
  t.equal(loadConfig({ WECHAT_APPS_FILE: `${dir}/apps.json` }).WECHAT_APPS_FILE, `${dir}/apps.json`)
})

t.test('passive refresh (stable): forced only while the reported token is current, within WeChat\'s limits', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock, instances } = await fleet(t, 2, url, { FORCE_REFRESH_DAILY_LIMIT: '2' })
  const advance = (ms: number) => { clock.advance(ms); mock.advance(ms) }
  const headers = { 'x-authing-app-id': 'billing-service' }
  const t1 = (await post(apps[0]!, ROUTE, body)).body.data!.accessToken

  const refreshed = await post(apps[1]!, REFRESH, { ...body, accessToken: t1 }, headers)
  t.equal(refreshed.body.statusCode, 200)
  const t2 = refreshed.body.data!.accessToken
  t.not(t2, t1)
  t.equal(mock.check(t1), 'invalid', 'WeChat was asked to force a refresh')
  t.equal(mock.issued(APP_ID), 2)

  const stale = await post(apps[0]!, REFRESH, { ...body, accessToken: t1 }, headers)
  t.equal(stale.body.data?.accessToken, t2, 'a report of an old token gets the current one')
  t.equal(mock.calls('stable_token'), 2, 'without calling WeChat')

  const tooSoon = await post(apps[0]!, REFRESH, { ...body, accessToken: t2 }, headers)
  t.equal(tooSoon.body.statusCode, 429)
  t.equal(tooSoon.body.apiCode, ApiCodes.FORCE_REFRESH_LIMITED.apiCode)
  t.match(tooSoon.body.message, /less than 30 s ago/)
  t.equal(tooSoon.body.data?.accessToken, t2, 'with the current token')
  t.equal(mock.calls('stable_token'), 2, 'and no upstream call')

  advance(31_000)
  const t3 = (await post(apps[1]!, REFRESH, { ...body, accessToken: t2 }, headers)).body.data!.accessToken
  t.not(t3, t2)
  advance(31_000)
  const limit = await post(apps[1]!, REFRESH, { ...body, accessToken: t3 }, headers)
  t.equal(limit.body.apiCode, ApiCodes.FORCE_REFRESH_LIMITED.apiCode, 'the daily limit (2 here) holds')
  t.match(limit.body.message, /used its 2 forced refreshes/)
  t.equal(limit.body.data?.accessToken, t3)
  t.equal(mock.issued(APP_ID), 3)

  const audit = instances.flatMap((i) => i.logs.records).filter((r) => r.audit === 'forced-refresh')
  t.equal(audit.filter((r) => r.outcome === 'refreshed').length, 2, 'each forced refresh is audited')
  t.equal(audit.filter((r) => r.outcome === 'refused').length, 2, 'and each refusal')
  t.ok(audit.every((r) => r.appId === APP_ID && r.caller === 'billing-service' && typeof r.requestId === 'string'))
  const text = JSON.stringify(audit)
  for (const secret of [APP_SECRET, t1, t2, t3]) t.notOk(text.includes(secret), 'no secret or token in the audit trail')
})

t.test('a storm of 200 reports of the same failed token: exactly one upstream refresh', async (t) => {
  for (const mode of ['stable', 'classic']) {
    const { mock, url } = await startMock(t)
    const { apps } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: mode })
    const failed = (await post(apps[0]!, ROUTE, body)).body.data!.accessToken
    mock.inject({ fault: { kind: 'latency', ms: 100 } })
    const answers = await Promise.all(Array.from({ length: 200 }, async (_, i) =>
      await post(apps[i % 2]!, REFRESH, { ...body, accessToken: failed })))
    t.equal(mock.issued(APP_ID), 2, `${mode}: one refresh for 200 reports`)
    const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
    t.equal(tokens.size, 1, `${mode}: all got the new token`)
    t.not([...tokens][0], failed)
  }
})

t.test('classic mode: a client reporting each token it was just given gets one replacement per spacing, not one per report', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps, clock } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: 'classic' })
  let current = (await post(apps[0]!, ROUTE, body)).body.data!.accessToken
  const answers = []
  // 200 reports in 2 s, each of the token the last answer gave.
  for (let i = 0; i < 200; i++) {
    const answer = await post(apps[i % 2]!, REFRESH, { ...body, accessToken: current })
    answers.push(answer)
    current = answer.body.data?.accessToken ?? current
    clock.advance(10)
  }
  t.equal(mock.issued(APP_ID), 2, 'one replacement, not 200 (each would retire the token another caller holds)')
  const spaced = answers.filter((a) => a.body.apiCode === ApiCodes.FORCE_REFRESH_LIMITED.apiCode)
  t.equal(spaced.length, 199, 'the other reports were inside the spacing: 4001')
  t.ok(spaced.every((a) => a.body.data?.accessToken === current && a.res.statusCode === 200), 'each with the current token')
  t.match(spaced[0]!.body.message, /replacement of a reported token .* less than 30 s ago/)
  clock.advance(30_000)
  const later = await post(apps[1]!, REFRESH, { ...body, accessToken: current })
  t.equal(later.body.statusCode, 200, 'past the spacing, a report of the current token replaces it')
  t.not(later.body.data?.accessToken, current)
  t.equal(mock.issued(APP_ID), 3)
})

t.test('a rotated secret is adopted after one check; the old one is then refused and remembered', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 2, url)
  const before = (await post(apps[0]!, ROUTE, body)).body.data!.accessToken
  mock.setApp(APP_ID, OTHER_SECRET)
  const heard = nextChange(apps[0]!.store, APP_ID, 2)
  const rotated = await post(apps[1]!, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(rotated.body.statusCode, 200, 'WeChat accepted the new secret')
  t.equal(rotated.body.data?.accessToken, before, 'stable mode: the same token, now under the new secret')
  t.equal(mock.calls('stable_token'), 2)
  await heard // the change message reached the first instance, which dropped its hot copy

  const oldChecked = await post(apps[0]!, ROUTE, body)
  t.equal(oldChecked.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'the old secret is no longer the known one: checked, and WeChat refuses it')
  for (let i = 0; i < 5; i++) {
    t.equal((await post(apps[i % 2]!, ROUTE, body)).body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode)
  }
  t.equal(mock.calls('stable_token'), 3, 'repeating the wrong secret costs nothing upstream, on either instance')
  t.equal((await post(apps[0]!, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })).body.data?.accessToken, before)
})

t.test('quota governor: past the daily budget no upstream call; cached token while valid, else 4002; resets at Beijing midnight', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const midnight = Date.parse('2026-11-25T16:00:00Z')
  clock.offset = midnight - 10 * HOUR - Date.now()
  // A configured secret is verified, so every fetch counts against the budget (an unverified one has an allowance of its own).
  const configured = JSON.stringify({ [APP_ID]: APP_SECRET })
  const { apps } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic', DAILY_UPSTREAM_BUDGET: '1', WECHAT_APPS: configured, SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const first = await post(apps[0]!, ROUTE, body)
  t.equal(first.body.statusCode, 200)
  clock.advance(2 * HOUR - 60_000)
  const stale = await post(apps[0]!, ROUTE, body)
  t.equal(stale.body.data?.accessToken, first.body.data?.accessToken, 'budget spent: the still-valid token is served')
  t.equal(mock.calls('token'), 1, 'no upstream call')
  clock.advance(120_000)
  const none = await post(apps[0]!, ROUTE, body)
  t.equal(none.body.apiCode, ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode, 'expired and no budget left: 4002')
  t.equal(none.body.statusCode, 429)
  t.equal(mock.calls('token'), 1)
  clock.advance(8 * HOUR + 1000)
  t.equal((await post(apps[0]!, ROUTE, body)).body.statusCode, 200, 'a new Beijing day, a new budget')
  t.equal(mock.calls('token'), 2)
})

t.test('the Beijing day starts at 16:00 UTC', async (t) => {
  t.equal(beijingDay(Date.parse('2026-11-24T15:59:59Z')), '2026-11-24')
  t.equal(beijingDay(Date.parse('2026-11-24T16:00:00Z')), '2026-11-25')
})

t.test('non-retryable refusals are remembered for the app, across instances, then asked again', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 2, url, { NEGATIVE_CACHE_SECONDS: '1' })
  mock.inject({ fault: { kind: 'errcode', errcode: 40164 }, times: 1 })
  const first = await post(apps[0]!, ROUTE, body)
  t.equal(first.body.apiCode, ApiCodes.WECHAT_IP_NOT_ALLOWED.apiCode)
  const again = await post(apps[1]!, ROUTE, body)
  t.equal(again.body.apiCode, ApiCodes.WECHAT_IP_NOT_ALLOWED.apiCode)
  t.match(again.body.message, /remembered/)
  t.equal(mock.calls('stable_token'), 1, 'the second instance did not ask')
  await sleep(1100)
  t.equal((await post(apps[1]!, ROUTE, body)).body.statusCode, 200, 'asked again after NEGATIVE_CACHE_SECONDS')
})

t.test('waiting on another instance\'s refresh is bounded by the request deadline', async (t) => {
  const { mock, url } = await startMock(t)
  const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `waiters${++prefixes}`, LOCK_LEASE_MS: '5000', WECHAT_MAX_RETRIES: '0' }
  const holderApp = (await build(t, { upstream: url, env: { ...shared, REQUEST_DEADLINE_MS: '2000' } })).app
  const waiterApp = (await build(t, { upstream: url, env: { ...shared, REQUEST_DEADLINE_MS: '400' } })).app
  mock.inject({ fault: { kind: 'hang' }, times: 1 })
  const holder = post(holderApp, ROUTE, body)
  await sleep(100)
  const started = Date.now()
  const waiter = await post(waiterApp, ROUTE, body)
  t.ok(Date.now() - started < 1000, `the waiter was answered within its deadline (${Date.now() - started} ms)`)
  t.equal(waiter.body.apiCode, ApiCodes.REFRESH_IN_PROGRESS.apiCode)
  t.equal(waiter.body.statusCode, 503)
  t.equal((await holder).body.apiCode, ApiCodes.WECHAT_UNAVAILABLE.apiCode, 'the holder hit its own deadline')
  const next = await post(waiterApp, ROUTE, body)
  t.equal(next.body.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, 'the failed fetch backs the app off, on every instance')
  t.equal(next.res.headers['retry-after'], '1', 'for about a second after a first failure')
  t.ok(await until(async () => (await post(waiterApp, ROUTE, body)).body.statusCode === 200), 'and once it ends, the next request fetches')
  t.equal(mock.calls('stable_token'), 2, 'one call that hung, one that answered')
})

t.test('unreadable remembered values are ignored, not fatal', async (t) => {
  const { url } = await startMock(t)
  const { apps, env } = await fleet(t, 1, url)
  const client = redis.client()
  t.teardown(() => client.disconnect())
  await client.set(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:negative`, 'not json', 'PX', 60_000)
  await client.set(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:rejected`, '[1,2', 'PX', 60_000)
  t.equal((await post(apps[0]!, ROUTE, body)).body.statusCode, 200)
})
