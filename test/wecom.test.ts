/** WeCom access tokens: one per application, each fetched once for any herd over every instance. */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { AGENT_ID, AGENT_SECRET, CORP_ID, OTHER_AGENT_ID, OTHER_AGENT_SECRET, TestClock, build, post, startWecomMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { until } from './helpers/until.js'

const ROUTE = '/api/v3/get-wecom-access-token'
const WECOM_APPS = JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET, [OTHER_AGENT_ID]: OTHER_AGENT_SECRET } })
const env = (url: string) => ({ WECOM_API_BASE: url, WECOM_APPS, SCHEDULER_INTERVAL_SECONDS: '0' })

t.test('two applications of one corp, asked concurrently on 3 instances: two tokens, each fetched once', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps } = await fleet(t, 3, 'http://127.0.0.1:9', env(url))
  const asks = Array.from({ length: 60 }, async (_, i) => {
    const secret = i % 2 === 0 ? AGENT_SECRET : OTHER_AGENT_SECRET
    return { secret, body: (await post(apps[i % 3]!, ROUTE, { corpId: CORP_ID, corpSecret: secret })).body }
  })
  const answers = await Promise.all(asks)
  t.ok(answers.every((a) => a.body.statusCode === 200), answers.find((a) => a.body.statusCode !== 200)?.body.message ?? 'all served')
  const bySecret = (secret: string) => new Set(answers.filter((a) => a.secret === secret).map((a) => a.body.data?.accessToken))
  const first = bySecret(AGENT_SECRET)
  const second = bySecret(OTHER_AGENT_SECRET)
  t.equal(first.size, 1, 'one token for the first application')
  t.equal(second.size, 1, 'one token for the second')
  t.not([...first][0], [...second][0], 'never the other application\'s token')
  t.equal(mock.issued(CORP_ID, AGENT_ID), 1)
  t.equal(mock.issued(CORP_ID, OTHER_AGENT_ID), 1)
  t.equal(mock.calls('gettoken'), 2, 'one gettoken per application')
  t.equal(mock.check([...first][0]!), 'valid')

  const scraped = await Promise.all(apps.map(async (app) => (await app.inject({ method: 'GET', url: '/metrics' })).body))
  const counted = scraped.map((text) => Number(/wxtoken_upstream_calls_total\{endpoint="gettoken",errcode="0"\} (\d+)/.exec(text)?.[1] ?? 0))
  t.equal(counted.reduce((a, b) => a + b, 0), 2, 'the instances counted the two gettoken calls')
  const metrics = scraped.join('\n')
  t.match(metrics, /wxtoken_upstream_budget\{credential="wecom_token"\} 1800/)
  t.notOk(metrics.includes(AGENT_SECRET) || metrics.includes([...first][0]!), 'no secret or token in a metric')
})

t.test('only the configured applications: a wrong secret or corp asks WeCom nothing', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app } = await build(t, { env: env(url) })
  const wrong = await post(app, ROUTE, { corpId: CORP_ID, corpSecret: 'x'.repeat(43) })
  t.equal(wrong.body.apiCode, ApiCodes.SECRET_MISMATCH.apiCode, wrong.body.message)
  t.notOk(wrong.body.message.includes('x'.repeat(43)))
  const corp = await post(app, ROUTE, { corpId: 'ww00000000000000ff', corpSecret: AGENT_SECRET })
  t.equal(corp.body.apiCode, ApiCodes.APP_NOT_CONFIGURED.apiCode, corp.body.message)
  for (const body of [{ corpId: CORP_ID }, { corpId: 'WW0123456789ABCDEF', corpSecret: AGENT_SECRET }, { corpId: CORP_ID, corpSecret: 'short' }]) {
    t.equal((await post(app, ROUTE, body)).body.apiCode, ApiCodes.INVALID_ARGUMENT.apiCode, JSON.stringify(body))
  }
  t.equal(mock.calls('gettoken'), 0)
  const unset = await build(t, { env: { WECOM_API_BASE: url, SCHEDULER_INTERVAL_SECONDS: '0' } })
  t.equal((await post(unset.app, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })).body.apiCode, ApiCodes.APP_NOT_CONFIGURED.apiCode, 'without WECOM_APPS')
})

t.test('WeCom\'s refusals: a reset secret is answered and remembered, a failing WeCom backed off', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app } = await build(t, { env: { ...env(url), WECHAT_MAX_RETRIES: '0' } })
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: 'gettoken' })
  const refused = await post(app, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })
  t.equal(refused.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, refused.body.message)
  const again = await post(app, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })
  t.equal(again.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode)
  t.equal(mock.calls('gettoken'), 1, 'remembered: WeCom not asked again meanwhile')
  mock.clearFaults()
  t.equal((await post(app, ROUTE, { corpId: CORP_ID, corpSecret: OTHER_AGENT_SECRET })).body.statusCode, 200, 'the other application is not held back')

  mock.inject({ fault: { kind: 'http', status: 502 }, endpoint: 'gettoken' })
  const { app: other } = await build(t, { env: { ...env(url), WECHAT_MAX_RETRIES: '0' } })
  const failed = await post(other, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })
  t.equal(failed.body.apiCode, ApiCodes.WECHAT_BAD_RESPONSE.apiCode)
  const backedOff = await post(other, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })
  t.equal(backedOff.body.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, backedOff.body.message)
})

t.test('WECOM_API_BASE=mock serves the configured applications offline', async (t) => {
  const { app } = await build(t, { env: { WECOM_API_BASE: 'mock', WECOM_APPS, SCHEDULER_INTERVAL_SECONDS: '0' } })
  const answer = await post(app, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })
  t.equal(answer.body.statusCode, 200, answer.body.message)
  t.type(answer.body.data?.accessToken, 'string')
})

t.test('a token WeCom will not replace before it expires is served to its last seconds, then fetched once', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { clock, env: { ...env(url), HOT_CACHE_MS: '0' } })
  const ask = async () => (await post(app, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })).body
  const first = await ask()
  t.equal(first.statusCode, 200)
  const left = Number(first.data!.expiresAt) * 1000 - clock.now()
  // 60 s before it expires: past the Official Account's serving margin (120 s), and WeCom would answer this same token.
  clock.advance(left - 60_000)
  mock.advance(left - 60_000)
  const late = await ask()
  t.equal(late.statusCode, 200, late.message)
  t.equal(late.data?.accessToken, first.data!.accessToken, 'still served')
  t.ok(late.data!.expiresIn <= 60)
  t.equal(mock.calls('gettoken'), 1, 'nothing fetched ahead: WeCom would give the same token back')
  // 3 s before it expires, within the 5 s it is served to: fetched once more, WeCom gives it back with 3 s left, and
  // it is served so to its end rather than fetched again for every request.
  clock.advance(57_000)
  mock.advance(57_000)
  for (let i = 0; i < 5; i++) {
    const last = await ask()
    t.equal(last.data?.accessToken, first.data!.accessToken, `the same token, ${last.data?.expiresIn} s left`)
  }
  t.equal(mock.calls('gettoken'), 2, 'one fetch in its last seconds, not one per request')
  clock.advance(4_000)
  mock.advance(4_000)
  const next = await Promise.all([ask(), ask(), ask()])
  t.ok(next.every((a) => a.statusCode === 200 && a.data?.accessToken === next[0]!.data?.accessToken), 'one new token for all')
  t.not(next[0]!.data?.accessToken, first.data!.accessToken)
  t.equal(mock.calls('gettoken'), 3, 'fetched once after it expired')
})

t.test('the scheduler fetches the configured applications\' tokens before anyone asks, once across instances', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps } = await fleet(t, 2, 'http://127.0.0.1:9', { ...env(url), SCHEDULER_INTERVAL_SECONDS: '1' })
  t.ok(await until(() => mock.issued(CORP_ID, AGENT_ID) === 1 && mock.issued(CORP_ID, OTHER_AGENT_ID) === 1, 5000), 'both applications have a token')
  const answers = await Promise.all(apps.flatMap((app) => [AGENT_SECRET, OTHER_AGENT_SECRET].map(async (corpSecret) =>
    (await post(app, ROUTE, { corpId: CORP_ID, corpSecret })).body)))
  t.ok(answers.every((a) => a.statusCode === 200), 'served')
  t.equal(mock.calls('gettoken'), 2, 'from the tokens the scheduler fetched: nobody waited for a fetch')
})

t.test('while Redis is down, an instance with no copy fetches the token directly, once for its herd', async (t) => {
  const { redis, fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps: [app] } = await fleet(t, 1, 'http://127.0.0.1:9', { ...env(url), REDIS_COMMAND_TIMEOUT_MS: '200' })
  await redis.stop()
  const answers = await Promise.all([1, 2, 3].map(async () => (await post(app!, ROUTE, { corpId: CORP_ID, corpSecret: AGENT_SECRET })).body))
  t.ok(answers.every((a) => a.statusCode === 200 && a.data?.accessToken === answers[0]!.data?.accessToken), answers.map((a) => a.message).join(' | '))
  t.equal(mock.calls('gettoken'), 1, 'one direct fetch')
  const metrics = (await app!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /\nwxtoken_configured_apps 2\n/, 'the configured-apps gauge counts the WeCom applications')
})
