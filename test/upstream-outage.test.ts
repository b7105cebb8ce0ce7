/**
 * WeChat failing for minutes: fetches are backed off per app and credential across instances, callers keep the stored
 * credential while it lasts (then 4007 with retry-after), attempts that never left are not charged, and the app is
 * served again within the longest backoff once WeChat recovers. Time is the test clock's: 20 requests a second for
 * minutes of it run in seconds.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { ApiCodes } from '../src/api-codes.js'
import { beijingDay } from '../src/official-account/token-service.js'
import { BACKOFF_MAX_MS } from '../src/tokens/guards.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const SIGNATURE = '/api/v3/get-wechat-jssdk-signature'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const signing = { ...body, url: 'https://shop.example.com/cart?item=1' }
const HOUR = 3600_000
const RATE = 20

const { redis, fleet } = await fleetRedis(t)

interface Answer { at: number, statusCode: number, apiCode: number | undefined, retryAfter: string | undefined, value: string | undefined }

/**
 * Sends `RATE` requests a second of the clock's time for `ms`, one at a time, over the instances in turn; the clocks
 * move 1000 / RATE ms after each answer.
 */
async function drive (apps: FastifyInstance[], clock: TestClock, advance: (ms: number) => void, ms: number, route: string, payload: unknown): Promise<Answer[]> {
  const answers: Answer[] = []
  for (let i = 0; i * (1000 / RATE) < ms; i++) {
    const { res, body } = await post<{ accessToken?: string, signature?: string }>(apps[i % apps.length]!, route, payload)
    const retryAfter = res.headers['retry-after']
    answers.push({
      at: clock.now(),
      statusCode: body.statusCode,
      apiCode: body.apiCode,
      retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
      value: body.data?.accessToken ?? body.data?.signature
    })
    advance(1000 / RATE)
  }
  return answers
}

/** A fleet of two instances with a clock of their own, the stand-in's clock moving with it. */
async function setUp (t: Test, options: Parameters<typeof startMock>[1] = {}) {
  const { mock, url } = await startMock(t, options)
  const clock = new TestClock()
  const { apps, env } = await fleet(t, 2, url, { REFRESH_AHEAD_SECONDS: '600' }, clock)
  const advance = (ms: number): void => {
    clock.advance(ms)
    mock.advance(ms)
  }
  return { mock, url, apps, env, clock, advance }
}

async function counter (prefix: string, name: string, day: string): Promise<number> {
  const client = redis.client()
  try {
    return Number(await client.get(`${prefix}:{${APP_ID}}:${name}:${day}`) ?? 0)
  } finally {
    client.disconnect()
  }
}

t.test('3 minutes of HTTP 502 at 20 requests a second, the token running out: at most 30 attempts, then served within the longest backoff', async (t) => {
  const { mock, apps, env, clock, advance } = await setUp(t)
  const first = await post(apps[0]!, TOKEN, body)
  t.equal(first.body.statusCode, 200)
  const day = beijingDay(clock.now())
  // 100 s left: refresh ahead is due, the serving margin (120 s) already passed, and the token expires in the outage.
  advance(2 * HOUR - 100_000)
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const before = mock.calls('stable_token')
  const outage = await drive(apps, clock, advance, 180_000, TOKEN, body)
  const attempts = mock.calls('stable_token') - before
  t.comment(`3 minutes of 502: ${attempts} attempts for ${outage.length} requests`)
  t.ok(attempts <= 30, `at most 30 attempts reached WeChat (${attempts})`)
  t.ok(await counter(env.REDIS_KEY_PREFIX, 'calls', day) <= 31, 'and at most those were charged to the budget')
  const whileValid = outage.filter((a) => a.at < Number(first.body.data!.expiresAt) * 1000 - 1000)
  t.ok(whileValid.length > 1000 && whileValid.every((a) => a.statusCode === 200 && a.value === first.body.data!.accessToken),
    `while the token lasted, every caller got it (${whileValid.length} requests)`)
  const expired = outage.filter((a) => a.at > Number(first.body.data!.expiresAt) * 1000 + 1000)
  t.ok(expired.length > 1000, 'the token ran out during the outage')
  t.ok(expired.every((a) => a.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode || a.apiCode === ApiCodes.WECHAT_BAD_RESPONSE.apiCode),
    'then every caller got 4007 (or the 3009 of the fetch that failed)')
  const backedOff = expired.filter((a) => a.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode)
  t.ok(backedOff.every((a) => Number(a.retryAfter) >= 1 && Number(a.retryAfter) <= BACKOFF_MAX_MS / 1000), 'each with retry-after, at most a minute')
  t.notOk(outage.some((a) => a.apiCode === ApiCodes.DAILY_BUDGET_EXHAUSTED.apiCode), 'the budget was never exhausted')

  mock.clearFaults()
  const recoveredAt = clock.now()
  const after = await drive(apps, clock, advance, 90_000, TOKEN, body)
  const served = after.find((a) => a.statusCode === 200)
  t.ok(served, 'WeChat back: the app is served again')
  t.ok(served!.at - recoveredAt <= BACKOFF_MAX_MS, `within the longest backoff (${Math.round((served!.at - recoveredAt) / 1000)} s)`)
  t.equal(mock.check(served!.value!), 'valid', 'with a token WeChat accepts')
  t.ok(after.slice(after.indexOf(served!)).every((a) => a.statusCode === 200), 'and every request after it')
})

t.test('the egress refusing connections for 3 minutes: nothing charged to the day, served again within the longest backoff', async (t) => {
  const { mock, url, apps, env, clock, advance } = await setUp(t)
  const port = Number(new URL(url).port)
  t.equal((await post(apps[0]!, TOKEN, body)).body.statusCode, 200)
  const day = beijingDay(clock.now())
  const charged = await counter(env.REDIS_KEY_PREFIX, 'calls', day)
  advance(2 * HOUR - 100_000)
  const calls = mock.calls('stable_token')
  await mock.close()
  const outage = await drive(apps, clock, advance, 180_000, TOKEN, body)
  t.equal(mock.calls('stable_token'), calls, 'WeChat saw nothing')
  t.equal(await counter(env.REDIS_KEY_PREFIX, 'calls', day), charged, 'and nothing was charged to the app\'s day')
  t.ok(outage.some((a) => a.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode), 'the failures backed the app off')
  await mock.start(port)
  const recoveredAt = clock.now()
  const after = await drive(apps, clock, advance, 90_000, TOKEN, body)
  const served = after.find((a) => a.statusCode === 200)
  t.ok(served && served.at - recoveredAt <= BACKOFF_MAX_MS, 'served again within the longest backoff')
})

t.test('getticket answering 502 for 3 minutes: the ticket backs off on its own, the signature route recovers, the token is untouched', async (t) => {
  const { mock, apps, env, clock, advance } = await setUp(t)
  t.equal((await post(apps[0]!, SIGNATURE, signing)).body.statusCode, 200)
  // The ticket has 100 s left; the token was fetched at the same time, so it is refreshed (and the test moves on).
  advance(2 * HOUR - 100_000)
  mock.inject({ fault: { kind: 'http', status: 502 }, endpoint: 'getticket' })
  const day = beijingDay(clock.now())
  const before = mock.calls('getticket')
  const outage = await drive(apps, clock, advance, 180_000, SIGNATURE, signing)
  const attempts = mock.calls('getticket') - before
  t.ok(attempts <= 30, `at most 30 getticket attempts (${attempts})`)
  t.ok(await counter(env.REDIS_KEY_PREFIX, 'jsapi_ticket:calls', day) <= 31, 'and at most those charged to the ticket budget')
  t.notOk(outage.some((a) => a.apiCode === ApiCodes.TICKET_BUDGET_EXHAUSTED.apiCode), 'the ticket budget was never exhausted')
  t.ok(outage.some((a) => a.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode), 'once the ticket ran out, callers got 4007')
  t.equal((await post(apps[1]!, TOKEN, body)).body.statusCode, 200, 'the token route is served throughout')
  mock.clearFaults()
  const recoveredAt = clock.now()
  const after = await drive(apps, clock, advance, 90_000, SIGNATURE, signing)
  const served = after.find((a) => a.statusCode === 200)
  t.ok(served && served.at - recoveredAt <= BACKOFF_MAX_MS, 'the signature route is served again within the longest backoff')
})

t.test('one instance\'s failure backs off every instance; the delay doubles, a fetch in the run makes one attempt, success ends it', async (t) => {
  const { mock, apps, env, clock } = await setUp(t)
  mock.inject({ fault: { kind: 'errcode', errcode: -1 } })
  const failed = await post(apps[0]!, TOKEN, body)
  t.equal(failed.body.apiCode, ApiCodes.WECHAT_BUSY.apiCode, 'WeChat busy on every try')
  const calls = mock.calls('stable_token')
  t.equal(calls, 3, 'a first fetch makes its retries')
  const other = await post(apps[1]!, TOKEN, body)
  t.equal(other.body.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, 'the other instance does not ask WeChat meanwhile')
  t.match(other.body.message, /apiCode 3007/, 'and says what failed')
  t.equal(other.body.statusCode, 503)
  t.equal(other.res.headers['retry-after'], '1')
  t.equal(mock.calls('stable_token'), calls)
  const metrics = (await apps[1]!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_local_refusals_total\{reason="backoff",credential="access_token"\} 1/, 'the refusal is counted')
  const failing = (await apps[0]!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(failing, /wxtoken_upstream_backoffs_total\{credential="access_token"\} 1/, 'and the backoff')

  clock.advance(1000)
  t.equal((await post(apps[1]!, TOKEN, body)).body.apiCode, ApiCodes.WECHAT_BUSY.apiCode, 'the backoff over, WeChat is asked again')
  t.equal(mock.calls('stable_token'), calls + 1, 'with one attempt, no retries, while the failures go on')
  const longer = await post(apps[0]!, TOKEN, body)
  t.equal(longer.res.headers['retry-after'], '2', 'and the next wait is about twice as long')

  mock.clearFaults()
  clock.advance(2000)
  t.equal((await post(apps[0]!, TOKEN, body)).body.statusCode, 200, 'WeChat back: served')
  const client = redis.client()
  t.teardown(() => client.disconnect())
  t.equal(await client.exists(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:backoff`), 0, 'and the run of failures is forgotten')
})

t.test('an undocumented errcode backs the app off only after a fetch with a verified secret: nobody who proves nothing holds the owner back', async (t) => {
  const { mock, apps, advance } = await setUp(t, { apps: { [APP_ID]: APP_SECRET } })
  t.equal((await post(apps[0]!, TOKEN, body)).body.statusCode, 200, 'the owner\'s secret is verified')
  advance(2 * HOUR)
  mock.inject({ fault: { kind: 'errcode', errcode: 99999 }, times: 1 })
  const stranger = await post(apps[0]!, TOKEN, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(stranger.body.apiCode, ApiCodes.WECHAT_ERROR.apiCode, 'a stranger\'s check got an errcode nobody documents')
  t.equal((await post(apps[1]!, TOKEN, body)).body.statusCode, 200, 'the owner is fetched at once: no backoff')
  advance(2 * HOUR)
  mock.inject({ fault: { kind: 'errcode', errcode: 99999 }, times: 1 })
  t.equal((await post(apps[0]!, TOKEN, body)).body.apiCode, ApiCodes.WECHAT_ERROR.apiCode)
  t.equal((await post(apps[1]!, TOKEN, body)).body.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, 'the owner\'s own fetch getting it backs the app off')
})

t.test('during an outage, a caller sending random appIds is bounded by its own backoff, and served again once WeChat is back', async (t) => {
  const { mock, apps, clock } = await setUp(t, { autoRegister: true })
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const randomAppId = (i: number): string => `wx${(0x5000 + i).toString(16).padStart(16, '0')}`
  const answers = []
  for (let i = 0; i < 200; i++) answers.push((await post(apps[i % 2]!, TOKEN, { appId: randomAppId(i), appSecret: APP_SECRET })).body)
  t.ok(mock.calls('stable_token') <= 3, `200 appIds nobody verified, WeChat failing: ${mock.calls('stable_token')} attempts (one fetch), then the caller waits`)
  t.ok(answers.slice(1).every((a) => a.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode), 'the rest: 4007, with no upstream call')
  t.match(answers[1]!.message, /This caller's last 1 check/)
  mock.clearFaults()
  clock.advance(2000)
  t.equal((await post(apps[0]!, TOKEN, { appId: randomAppId(1000), appSecret: APP_SECRET })).body.statusCode, 200, 'WeChat back: the caller\'s next check is made and served')
  t.equal((await post(apps[1]!, TOKEN, { appId: randomAppId(1001), appSecret: APP_SECRET })).body.statusCode, 200, 'and its success ended the caller\'s backoff')
})

t.test('the passive refresh route while the app is backed off: 4007 with retry-after and the current token, WeChat not asked', async (t) => {
  const { mock, apps } = await setUp(t)
  const token = (await post(apps[0]!, TOKEN, body)).body.data!.accessToken
  mock.revokeTokens(APP_ID)
  mock.inject({ fault: { kind: 'http', status: 503 } })
  t.equal((await post(apps[0]!, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: token })).body.apiCode,
    ApiCodes.WECHAT_BAD_RESPONSE.apiCode, 'the forced refresh met WeChat failing')
  const calls = mock.calls('stable_token')
  const again = await post(apps[1]!, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: token })
  t.equal(again.body.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode)
  t.equal(again.body.data?.accessToken, token, 'with the current token')
  t.match(again.res.headers['retry-after'], /^\d+$/)
  t.equal(mock.calls('stable_token'), calls, 'WeChat not asked')
  t.equal(mock.forcedCalls(APP_ID), 1, 'the failed forced refresh was tried once (WeChat allows one in 30 s), not retried')
})

t.test('a getticket left with little of the request\'s deadline (the token took most of it) is cut short, not a failure of WeChat: no backoff', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 1, url, { REQUEST_DEADLINE_MS: '2000', SCHEDULER_INTERVAL_SECONDS: '0' })
  // The token takes 1.5 s of the request's 2 s; getticket then hangs through the 0.5 s left.
  mock.inject({ fault: { kind: 'latency', ms: 1500 }, endpoint: 'stable_token', times: 1 })
  mock.inject({ fault: { kind: 'hang' }, endpoint: 'getticket', times: 1 })
  const first = await post(apps[0]!, SIGNATURE, signing)
  t.equal(first.body.apiCode, ApiCodes.WECHAT_UNAVAILABLE.apiCode, 'the request ran out of time (3008)')
  const second = await post(apps[0]!, SIGNATURE, signing)
  t.equal(second.body.statusCode, 200, `the next request fetches the ticket at once, not backed off (got apiCode ${second.body.apiCode})`)
  t.equal(mock.calls('getticket'), 2)
})
