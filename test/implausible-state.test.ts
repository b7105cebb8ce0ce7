/**
 * Per-app values the guards read back from the store are checked as stored entries are: a `:backoff` whose `until`
 * lies further ahead than the longest backoff (a minute), or a `:forced-at` in the future, written without a TTL (a
 * dump restored, a tool, an instance with a wrong clock), are ignored, so they cannot hold the app's fetches or
 * replacements back for as long as the key lives.
 */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, TestClock, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const { redis, fleet } = await fleetRedis(t)

t.test('a :backoff with an until a day ahead and no TTL is ignored: the app is fetched', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { apps, env } = await fleet(t, 1, url, { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const client = redis.client()
  t.teardown(() => client.disconnect())
  await client.set(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:backoff`, JSON.stringify({ failures: 1, until: clock.now() + 24 * 3600_000, last: 3009 }))
  clock.advance(5 * 60_000)
  const answer = await post(apps[0]!, TOKEN, body)
  t.comment(`five minutes on: apiCode ${answer.body.apiCode}, retry-after ${String(answer.res.headers['retry-after'])}`)
  t.equal(answer.body.statusCode, 200, 'five minutes on, longer than any backoff, WeChat is asked and the app served')
  t.equal(mock.calls('stable_token'), 1)
})

t.test('a :forced-at in the future with no TTL is ignored: a report of a refused token is acted on', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { apps, env } = await fleet(t, 1, url, { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const token = (await post(apps[0]!, TOKEN, body)).body.data!.accessToken
  const client = redis.client()
  t.teardown(() => client.disconnect())
  await client.set(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:forced-at`, String(clock.now() + 24 * 3600_000))
  clock.advance(5 * 60_000)
  mock.revokeTokens(APP_ID)
  const answer = await post(apps[0]!, REFRESH, { ...body, accessToken: token })
  t.not(answer.body.apiCode, ApiCodes.FORCE_REFRESH_LIMITED.apiCode, `five minutes on, the report is acted on (got ${answer.body.apiCode}: ${answer.body.message})`)
  t.equal(mock.forcedCalls(APP_ID), 1)
})
