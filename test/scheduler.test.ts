import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'

const redis = await RedisServer.start()
t.teardown(() => redis.stop())

t.test('one failing app does not stop the scheduler\'s tick for the others', async (t) => {
  const apps = { [APP_ID]: APP_SECRET, wx00000000000000d1: APP_SECRET, wx00000000000000d2: APP_SECRET }
  const { mock, url } = await startMock(t, { apps })
  const prefix = 'scheduler1'
  const client = redis.client()
  t.teardown(() => client.disconnect())
  await client.rpush(`${prefix}:{${APP_ID}}:token`, 'not a string value')
  const { logs } = await build(t, {
    upstream: url,
    env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, WECHAT_APPS: JSON.stringify(apps), SCHEDULER_INTERVAL_SECONDS: '1' }
  })
  for (let i = 0; i < 50 && (mock.issued('wx00000000000000d1') === 0 || mock.issued('wx00000000000000d2') === 0); i++) await sleep(100)
  t.equal(mock.issued('wx00000000000000d1'), 1, 'the apps after the failing one were refreshed')
  t.equal(mock.issued('wx00000000000000d2'), 1)
  const failures = logs.records.filter((r) => r.appId === APP_ID && r.level === 40)
  t.ok(failures.length >= 1, 'the failing app is logged with its appId')
})
