/**
 * Open Platform authorizers: an authorization exchanged once, the refresh token kept with no expiry and replaced when
 * WeChat rotates it, removed when the authorization ends, and never lost: a flushed store and a store restarted empty
 * with every instance new are both served again without any re-authorization.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { CALLER_KEYS, COMPONENT, TestClock, build, post, startOpenPlatformMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import { authorizeAll, refreshTokenCount } from './helpers/open-platform.js'
import type { MockOpenPlatform } from '../src/stand-in/open-platform.js'

const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
const on = { WECHAT_COMPONENTS: JSON.stringify([COMPONENT]), AUTH_TOKENS: CALLER_KEYS.join(','), SCHEDULER_INTERVAL_SECONDS: '0' }
const C = COMPONENT.appId
const authorizer = (i: number): string => `wx${(0xa0000000 + i).toString(16).padStart(16, '0')}`
const A = authorizer(1)

async function callbackOf (app: FastifyInstance, platform: MockOpenPlatform): Promise<void> {
  platform.setCallback(C, `http://127.0.0.1:${await listen(app)}/wechat/components/${C}/events`)
}

const tokenOf = async (app: FastifyInstance, authorizerAppId = A) =>
  await post(app, '/api/v3/get-authorizer-access-token', { componentAppId: C, authorizerAppId }, auth)
const exchange = async (app: FastifyInstance, authorizationCode: string) =>
  await post(app, '/api/v3/exchange-authorization-code', { componentAppId: C, authorizationCode }, auth)
t.test('an authorized event is exchanged once; its token is served to a herd without another fetch', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app, logs } = await build(t, { upstream: url, env: on })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  t.ok(await authorizeAll(app, platform, [A]), 'the refresh token was kept')
  t.equal(platform.calls('api_query_auth', C), 1)
  const answers = await Promise.all(Array.from({ length: 20 }, async () => await tokenOf(app)))
  const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
  t.equal(tokens.size, 1, JSON.stringify(answers[0]?.body))
  t.equal(platform.checkAuthorizerToken([...tokens][0]!), 'valid', 'the token api_query_auth gave, still WeChat\'s latest')
  t.equal(platform.calls('api_authorizer_token'), 0, 'no fetch: the exchanged token was stored')
  const lines = logs.lines.join('\n')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'no ticket, token, refresh token or key in the log')
})

t.test('a redirect code is exchanged once for every instance that gets it; a code WeChat refuses is 3018', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, on)
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  const code = platform.authorize(C, A)
  const answers = await Promise.all([exchange(apps[0]!, code), exchange(apps[1]!, code), exchange(apps[0]!, code)])
  t.same(answers.map((a) => (a.body.data as { authorizerAppId?: string } | undefined)?.authorizerAppId), [A, A, A], JSON.stringify(answers.map((a) => a.body)))
  t.equal(new Set(answers.map((a) => a.body.data?.accessToken)).size, 1, 'one token for all three')
  t.equal(platform.calls('api_query_auth'), 1, 'one exchange')
  t.equal((await tokenOf(apps[1]!)).body.data?.accessToken, answers[0]!.body.data?.accessToken)
  const refused = await exchange(apps[0]!, 'not-a-code-wechat-gave')
  t.equal(refused.body.apiCode, 3018, JSON.stringify(refused.body))
  t.notOk(JSON.stringify(refused.body).includes('not-a-code-wechat-gave'), 'the code is not repeated')
  t.equal((await exchange(apps[1]!, 'bad code with spaces')).body.apiCode, 1002, 'not a code: refused by the schema')
})

t.test('a refresh token WeChat rotates is saved before use: no instance sends the old one again', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0' }, clock)
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  t.ok(await authorizeAll(apps[0]!, platform, [A]))
  platform.rotateRefreshTokens(true)
  const before = platform.refreshTokenOf(C, A)
  for (let round = 1; round <= 3; round++) {
    clock.advance(7200_000)
    const served = await tokenOf(apps[round % 2]!)
    t.equal(served.body.statusCode, 200, JSON.stringify(served.body))
    t.equal(platform.checkAuthorizerToken(served.body.data!.accessToken), 'valid')
    t.equal(platform.calls('api_authorizer_token'), round)
  }
  t.not(platform.refreshTokenOf(C, A), before, 'WeChat rotated it')
  t.equal(platform.calls('api_get_authorizer_list'), 0, 'never refused (61023), so never recovered')
  t.equal(await refreshTokenCount(apps[0]!, 'rotated') + await refreshTokenCount(apps[1]!, 'rotated'), 3)
})

t.test('unauthorized removes the refresh token: 4010, with one list read per spacing and no token call', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0' })
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  t.ok(await authorizeAll(apps[0]!, platform, [A]))
  t.equal((await tokenOf(apps[1]!)).body.statusCode, 200)
  t.equal(await platform.unauthorize(C, A), true, 'the unauthorized event was taken')
  t.ok(await until(async () => await refreshTokenCount(apps[0]!, 'removed') === 1), 'removed')
  const answers = await Promise.all(Array.from({ length: 10 }, async (_, i) => await tokenOf(apps[i % 2]!)))
  t.ok(answers.every((a) => a.body.apiCode === 4010), JSON.stringify(answers.map((a) => a.body.apiCode)))
  t.equal(platform.calls('api_get_authorizer_list'), 1, 'the list was read once for both instances and ten requests')
  t.equal(platform.calls('api_authorizer_token'), 0, 'WeChat was never asked for its token')
  const stranger = await tokenOf(apps[0]!, authorizer(999))
  t.equal(stranger.body.apiCode, 4010, 'an account that never authorized: the same, without another list read')
  t.equal(platform.calls('api_get_authorizer_list'), 1)
})

t.test('a component with 600 authorizers: the list is read whole, its pages of 500 with WeChat\'s refresh tokens past 64 KB', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  // Authorized at WeChat, their events never taken here: only the list holds their refresh tokens.
  const accounts = Array.from({ length: 600 }, (_, i) => authorizer(i))
  for (const account of accounts) platform.authorize(C, account)
  const last = await tokenOf(app, accounts.at(-1))
  t.equal(last.body.statusCode, 200, JSON.stringify(last.body))
  t.equal(platform.calls('api_get_authorizer_list'), 2, 'two pages: 500 and 100')
  const first = await tokenOf(app, accounts[0])
  t.equal(first.body.statusCode, 200, JSON.stringify(first.body))
  t.equal(platform.calls('api_get_authorizer_list'), 2, 'every refresh token kept from the one read')
  t.equal(platform.calls('api_authorizer_token'), 2)
})

t.test('made-up authorizers asked one after another for a second: the list is read once, not again by those that looked before it ended', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  // Each looks for the read's mark, waits for other instances to write theirs back, then reads: started 10 ms apart,
  // many of them looked before the first read ended and reach the list's lock after it was released.
  const answers = await Promise.all(Array.from({ length: 100 }, async (_, i) => {
    await sleep(10 * i)
    return await tokenOf(app, authorizer(2000 + i))
  }))
  t.ok(answers.every((a) => a.body.apiCode === 4010), JSON.stringify([...new Set(answers.map((a) => a.body.apiCode))]))
  t.equal(platform.calls('api_get_authorizer_list'), 1, 'one read for all')
  t.equal(platform.calls('api_authorizer_token'), 0)
})

t.test('a refresh token WeChat refuses (61023) is replaced from the authorizer list, once', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0' }, clock)
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  // (Pushes carry the wall clock's timestamp: every authorization is made before this test moves the service's clock.)
  const unlisted = authorizer(7)
  t.ok(await authorizeAll(apps[0]!, platform, [A, unlisted]))
  // Another deployment refreshes it with WeChat rotating: the one kept here is refused from then on.
  platform.rotateRefreshTokens(true)
  const componentToken = (await post(apps[0]!, '/api/v3/get-component-access-token', { componentAppId: C }, auth)).body.data!.accessToken
  const elsewhere = await fetch(`${url}/cgi-bin/component/api_authorizer_token?component_access_token=${componentToken}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ component_appid: C, authorizer_appid: A, authorizer_refresh_token: platform.refreshTokenOf(C, A) })
  })
  t.equal(((await elsewhere.json()) as { authorizer_refresh_token?: string }).authorizer_refresh_token, platform.refreshTokenOf(C, A), 'rotated elsewhere')
  platform.rotateRefreshTokens(false)
  clock.advance(7200_000)
  const served = await tokenOf(apps[1]!)
  t.equal(served.body.statusCode, 200, JSON.stringify(served.body))
  t.equal(platform.checkAuthorizerToken(served.body.data!.accessToken), 'valid')
  t.equal(platform.calls('api_get_authorizer_list'), 1)
  t.equal(platform.calls('api_authorizer_token'), 3, 'the one elsewhere; refused here once; then fetched with the listed one')
  clock.advance(7200_000)
  t.equal((await tokenOf(apps[0]!)).body.statusCode, 200, 'the other instance uses the listed one too')
  t.equal(platform.calls('api_authorizer_token'), 4)
  t.equal(platform.calls('api_get_authorizer_list'), 1)

  // Refused with no other in the list (the stand-in ends the refresh token without an event): 4010 and no loop.
  platform.setCallback(C, 'http://127.0.0.1:9/unreachable')
  await platform.unauthorize(C, unlisted)
  clock.advance(7200_000)
  const before = platform.calls('api_authorizer_token')
  const answers = await Promise.all(Array.from({ length: 6 }, async (_, i) => await tokenOf(apps[i % 2]!, unlisted)))
  t.ok(answers.every((a) => a.body.apiCode === 4010), JSON.stringify(answers.map((a) => a.body.apiCode)))
  t.equal(platform.calls('api_authorizer_token') - before, 1, 'the dead refresh token was sent once, not once per request')
})

t.test('nothing lost: 50 authorizers over 3 instances survive a flush, and a store restarted empty with every instance new', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet, redis } = await fleetRedis(t)
  const env = { ...on, HOT_CACHE_MS: '0' }
  const clock = new TestClock()
  const first = await fleet(t, 3, url, env, clock)
  await callbackOf(first.apps[0]!, platform)
  await platform.pushTicket(C)
  const all = Array.from({ length: 50 }, (_, i) => authorizer(i))
  t.ok(await authorizeAll(first.apps[0]!, platform, all), '50 authorizations kept')
  const serveAll = async (apps: FastifyInstance[]): Promise<number[]> =>
    await Promise.all(all.map(async (appId, i) => (await tokenOf(apps[i % apps.length]!, appId)).body.statusCode as number))
  t.ok((await serveAll(first.apps)).every((s) => s === 200))
  const calls = (): Record<string, number> => Object.fromEntries(['api_component_token', 'api_authorizer_token', 'api_get_authorizer_list', 'api_query_auth', 'api_start_push_ticket']
    .map((endpoint) => [endpoint, platform.calls(endpoint as Parameters<MockOpenPlatform['calls']>[0])]))
  const base = calls()

  // A flush while in use: the instances put back their copies of tokens, ticket and refresh tokens.
  const client = redis.client()
  t.teardown(() => client.quit())
  await client.flushall()
  t.ok((await serveAll(first.apps)).every((s) => s === 200), 'all served after the flush')
  clock.advance(7200_000)
  t.ok((await serveAll(first.apps)).every((s) => s === 200), 'and two hours later, each token fetched with its refresh token')
  const afterFlush = calls()
  // Tokens, ticket and refresh tokens were put back by the instances that held them (the refresh tokens all by the
  // instance that took the authorizations, asked by the two others): the tokens fetched were due two hours later anyway.
  t.same(afterFlush, { ...base, api_component_token: base.api_component_token! + 1, api_authorizer_token: base.api_authorizer_token! + 50 },
    'the flush itself cost WeChat nothing')
  t.comment(`flush: ${JSON.stringify(Object.fromEntries(Object.entries(afterFlush).map(([k, v]) => [k, v - base[k]!])))}`)

  // The store restarted without persistence and every instance replaced: nothing held anywhere but at WeChat.
  await Promise.all(first.apps.map(async (app) => await app.close()))
  await redis.stop()
  await redis.restart()
  // (New instances on a new clock: their pushes are checked against the wall clock again.)
  const second = await fleet(t, 3, url, env, new TestClock())
  await callbackOf(second.apps[0]!, platform)
  const beforeLoss = calls()
  const started = Date.now()
  t.equal((await tokenOf(second.apps[0]!, all[0])).body.apiCode, 4009, 'no ticket yet: WeChat is asked to push one')
  t.ok(await until(() => platform.latestTicket(C) !== undefined && platform.pushes(C).at(-1)?.accepted === true, 5000), 'the pushed ticket came')
  const statuses = await serveAll(second.apps)
  t.ok(statuses.every((s) => s === 200), JSON.stringify(statuses))
  const afterLoss = calls()
  const cost = Object.fromEntries(Object.entries(afterLoss).map(([k, v]) => [k, v - beforeLoss[k]!]))
  t.same(cost, { api_component_token: 1, api_authorizer_token: 50, api_get_authorizer_list: 1, api_query_auth: 0, api_start_push_ticket: 1 },
    'one push asked, one component token, one list read for all 50, one token each: no re-authorization')
  t.comment(`total loss: ${JSON.stringify(cost)}, every authorizer served again ${Date.now() - started} ms after the first request`)
  const keys = (await client.keys('*')).join('\n')
  const lines = [...first.instances, ...second.instances].flatMap((i) => i.logs.lines).join('\n')
  for (const secret of platform.secrets()) {
    t.notOk(keys.includes(secret), 'no ticket, token, refresh token, code or key in a Redis key name')
    t.notOk(lines.includes(secret), 'nor in any log line')
  }
})

t.test('the scheduler refreshes an authorizer\'s token ahead of its expiry, with nobody asking', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, env: { ...on, SCHEDULER_INTERVAL_SECONDS: '1' }, clock })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  t.ok(await authorizeAll(app, platform, [A]))
  const first = (await tokenOf(app)).body.data!.accessToken
  t.equal(platform.calls('api_authorizer_token'), 0)
  clock.advance(7200_000 - 300_000)
  t.ok(await until(() => platform.calls('api_authorizer_token') === 1, 10_000), 'refreshed by the scheduler')
  t.ok(await until(async () => (await tokenOf(app)).body.data?.accessToken !== first), 'and served from then on')
  t.equal(platform.calls('api_authorizer_token'), 1, 'once')
})

t.test('codes a caller sends are bounded per component and day (COMPONENT_DAILY_BUDGET): past it, 4002 without WeChat', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, COMPONENT_DAILY_BUDGET: '3' } })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  for (let i = 0; i < 3; i++) t.equal((await exchange(app, `made-up-code-${i}`)).body.apiCode, 3018)
  t.equal(platform.calls('api_query_auth'), 3)
  const refused = await exchange(app, 'made-up-code-4')
  t.equal(refused.body.apiCode, 4002, JSON.stringify(refused.body))
  t.equal(platform.calls('api_query_auth'), 3, 'not sent')
})

t.test('while another instance reads the authorizer list, or died reading it, an authorized account is not answered 4010', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet, redis } = await fleetRedis(t)
  const { apps, env } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0', REQUEST_DEADLINE_MS: '2000', LOCK_LEASE_MS: '3000' })
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  // Authorized at WeChat, its event never taken here: only the list holds its refresh token.
  platform.authorize(C, A)
  const client = redis.client()
  t.teardown(() => client.quit())
  const lock = `${env.REDIS_KEY_PREFIX}:{_component:${C}}:authorizer_list`
  // An instance took the list's lock and died (a deploy, a crash) before its read ended.
  await client.set(lock, 'an-instance-that-died', 'PX', 3000)
  const waited = await tokenOf(apps[1]!)
  t.equal(waited.body.apiCode, 4003, `the list was not read: not "not authorized" (${JSON.stringify(waited.body)})`)
  t.equal(platform.calls('api_get_authorizer_list'), 0)
  // Once the dead reader's lock lapses, the next request reads the list; the lock a reader holds lapses with LOCK_LEASE_MS.
  platform.inject({ endpoint: 'api_get_authorizer_list', fault: { kind: 'latency', ms: 500 }, times: 1 })
  let lease = -1
  const watched = until(async () => {
    if (platform.calls('api_get_authorizer_list') === 0) return false
    lease = await client.pttl(lock)
    return true
  }, 10_000)
  t.ok(await until(async () => (await tokenOf(apps[1]!)).body.statusCode === 200, 10_000), 'served once the lock lapsed')
  t.ok(await watched)
  t.ok(lease > 0 && lease <= 3000, `a reader's lock lapses with LOCK_LEASE_MS, not the list spacing (${lease} ms left)`)
  t.equal(platform.calls('api_get_authorizer_list'), 1)
})

/** Another deployment refreshes the authorizer's token with WeChat rotating: the refresh token kept here is dead. */
async function rotateElsewhere (app: FastifyInstance, platform: MockOpenPlatform, url: string, authorizerAppId: string): Promise<void> {
  platform.rotateRefreshTokens(true)
  const componentToken = (await post(app, '/api/v3/get-component-access-token', { componentAppId: C }, auth)).body.data!.accessToken
  await fetch(`${url}/cgi-bin/component/api_authorizer_token?component_access_token=${componentToken}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ component_appid: C, authorizer_appid: authorizerAppId, authorizer_refresh_token: platform.refreshTokenOf(C, authorizerAppId) })
  })
  platform.rotateRefreshTokens(false)
}

t.test('refresh tokens rotated elsewhere are replaced though the list was just read for a made-up appId, with one read for all', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0' }, clock)
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(C)
  const B = authorizer(2)
  t.ok(await authorizeAll(apps[0]!, platform, [A, B]))
  // A caller asking for an account that never authorized (or left): the list is read, and not again for the spacing.
  t.equal((await tokenOf(apps[0]!, authorizer(999))).body.apiCode, 4010)
  t.equal(platform.calls('api_get_authorizer_list'), 1)
  const kept = { A: platform.refreshTokenOf(C, A), B: platform.refreshTokenOf(C, B) }
  await rotateElsewhere(apps[0]!, platform, url, A)
  await rotateElsewhere(apps[0]!, platform, url, B)
  t.not(platform.refreshTokenOf(C, A), kept.A)
  t.not(platform.refreshTokenOf(C, B), kept.B)
  clock.advance(7200_000)
  for (const [appId, app] of [[A, apps[1]!], [B, apps[0]!]] as const) {
    const served = await tokenOf(app, appId)
    t.equal(served.body.statusCode, 200, JSON.stringify(served.body))
    t.equal(platform.checkAuthorizerToken(served.body.data!.accessToken), 'valid')
  }
  t.equal(platform.calls('api_get_authorizer_list'), 2, 'one more read, for both refused refresh tokens')
})

t.test('an authorization WeChat pushes is exchanged though callers spent the day\'s budget of codes', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, COMPONENT_DAILY_BUDGET: '2' } })
  await callbackOf(app, platform)
  await platform.pushTicket(C)
  for (let i = 0; i < 2; i++) t.equal((await exchange(app, `made-up-code-${i}`)).body.apiCode, 3018)
  t.equal((await exchange(app, 'made-up-code-2')).body.apiCode, 4002, 'the callers\' budget of codes is spent')
  // (And the list was read lately, so a refresh token not kept now would be 4010 until the spacing ends.)
  t.equal((await tokenOf(app, authorizer(999))).body.apiCode, 4010)
  t.ok(await authorizeAll(app, platform, [A]), 'the pushed code (signed by WeChat, not a caller\'s) was exchanged')
  const served = await tokenOf(app)
  t.equal(served.body.statusCode, 200, JSON.stringify(served.body))
  t.equal(platform.calls('api_get_authorizer_list'), 1)
})
