/**
 * A caller waiting for another holder of the app's lock whose deadline passed during its last wait does not take the
 * lock when it frees: it gets 4003, WeChat is not asked, and nothing backs the app off (a fetch with no time left
 * says nothing of WeChat).
 */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, TestClock, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { until } from './helpers/until.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const { redis, fleet } = await fleetRedis(t)

t.test('a waiter whose deadline passed while the lock was freed: 4003, WeChat not asked, and no backoff', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { apps, env } = await fleet(t, 1, url, { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const client = redis.client()
  t.teardown(() => client.disconnect())
  const key = (name: string): string => `${env.REDIS_KEY_PREFIX}:{${APP_ID}}:${name}`
  // Another instance holds the app's lock (fetching; a check of someone else's secret, say).
  await client.set(key('lock'), 'another-instance', 'PX', 60_000)
  let answer: { apiCode: number | undefined, message: string } | undefined
  const waiting = post(apps[0]!, TOKEN, body).then(({ body }) => { answer = { apiCode: body.apiCode, message: body.message } })
  t.ok(await until(async () => /wxtoken_lock_waits_total\{credential="access_token"\} 1/.test((await apps[0]!.inject({ method: 'GET', url: '/metrics' })).body)),
    'the caller waits for the lock')
  // Its deadline passes during a wait, and the holder lets the lock go (its check refused) at the end of it.
  clock.advance(10_001)
  await client.del(key('lock'))
  await waiting
  t.equal(mock.calls('stable_token'), 0, 'WeChat was never asked')
  t.equal(answer?.apiCode, ApiCodes.REFRESH_IN_PROGRESS.apiCode, `the caller is told its wait ran out (got ${answer?.apiCode}: ${answer?.message})`)
  t.equal(await client.exists(key('backoff')), 0, 'and the app is not backed off, on any instance, for a failure of WeChat that did not happen')
})
