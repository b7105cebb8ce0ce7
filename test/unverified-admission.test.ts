/**
 * The counts that hold a place for each check of an unverified secret until it is settled:
 * - a check settled after its window ended gives nothing to the next window (no counter goes below 0), so the caller
 *   gets no more than UNVERIFIED_CHECKS_PER_CALLER checks in it;
 * - a check whose instance died never settles: its place among the checks in flight lapses a deadline later, so the
 *   caller's requests past its limit get 4005 rather than waiting out their deadline.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { request } from 'undici'
import { ApiCodes } from '../src/api-codes.js'
import { APP_SECRET, OTHER_SECRET, build, post, startMock } from './helpers/build.js'
import { RedisServer, freePort } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const appIdOf = (i: number): string => `wx${(0xd000 + i).toString(16).padStart(16, '0')}`

const redis = await RedisServer.start()
t.teardown(() => redis.stop())
const client = redis.client()
t.teardown(() => client.disconnect())

t.test('accepted checks settled after their window give nothing to the next one: no counter below 0, the limit holds', async (t) => {
  const prefix = 'admission-window'
  const { mock, url } = await startMock(t, { apps: { [appIdOf(0)]: APP_SECRET, [appIdOf(1)]: APP_SECRET } })
  const { app } = await build(t, {
    upstream: url,
    env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, UNVERIFIED_CHECK_WINDOW_SECONDS: '5', UNVERIFIED_CHECKS_PER_CALLER: '2' }
  })
  // WeChat takes 6 s over the two checks: they are accepted after the window they were admitted in has ended.
  mock.inject({ fault: { kind: 'latency', ms: 6000 }, endpoint: 'stable_token', times: 2 })
  const accepted = await Promise.all([0, 1].map(async (i) => await post(app, TOKEN, { appId: appIdOf(i), appSecret: APP_SECRET })))
  t.same(accepted.map((a) => a.body.statusCode), [200, 200], 'both right secrets accepted')
  const space = `${prefix}:{_caller:ip:127.0.0.1}`
  const [overall, pending] = await Promise.all([client.get(`${space}:unverified`), client.get(`${space}:unverified-pending`)])
  t.comment(`the caller's counters now: unverified ${overall}, unverified-pending ${pending}`)
  t.ok(Number(overall ?? 0) >= 0 && Number(pending ?? 0) >= 0, 'no counter of the caller is negative')
  const before = mock.calls('stable_token')
  // Wrong secrets for appIds WeChat does not know, one each: at most UNVERIFIED_CHECKS_PER_CALLER reach WeChat.
  for (let i = 10; i < 16; i++) await post(app, TOKEN, { appId: appIdOf(i), appSecret: OTHER_SECRET })
  const checked = mock.calls('stable_token') - before
  t.ok(checked <= 2, `at most 2 checks of unverified secrets in the window reached WeChat (${checked})`)
})

t.test('an instance that died during a check does not leave the caller waiting out its deadline on every request past its limit', async (t) => {
  const prefix = 'admission-crash'
  const { mock, url } = await startMock(t)
  const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix, UNVERIFIED_CHECKS_PER_CALLER: '1' }
  // The instance that dies: its checks are done in 1 s, answered or not.
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('..', import.meta.url),
    env: { PATH: process.env.PATH ?? '', PORT: String(port), HOST: '127.0.0.1', WECHAT_API_BASE: url, REQUEST_DEADLINE_MS: '1000', LOG_LEVEL: 'silent', ...env },
    stdio: 'ignore'
  })
  t.teardown(() => { child.kill('SIGKILL') })
  t.ok(await until(async () => await request(`http://127.0.0.1:${port}/health/live`).then(async (res) => { await res.body.dump(); return true }, () => false), 20_000, 50), 'the first instance started')
  mock.inject({ fault: { kind: 'hang' }, appId: appIdOf(20) })
  const inflight = request(`http://127.0.0.1:${port}${TOKEN}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId: appIdOf(20), appSecret: OTHER_SECRET })
  }).catch(() => undefined)
  t.ok(await until(() => mock.calls('stable_token', appIdOf(20)) === 1), 'its check of a wrong secret reached WeChat')
  child.kill('SIGKILL')
  await once(child, 'exit')
  await inflight

  // The caller's next check, on a live instance with the default deadline (long, so that its wait can be seen).
  const { app } = await build(t, { upstream: url, env: { ...env, REQUEST_DEADLINE_MS: '60000', LOCK_LEASE_MS: '65000' } })
  const gets = async (): Promise<number> => Number(/cmdstat_get:calls=(\d+)/.exec(await client.info('commandstats'))?.[1] ?? 0)
  const start = await gets()
  let answered: number | undefined
  const next = post(app, TOKEN, { appId: appIdOf(21), appSecret: OTHER_SECRET }).then((a) => { answered = a.body.apiCode })
  // 40 polls (4 s) of the store, long past the dead check's deadline of 1 s.
  await until(async () => answered !== undefined || await gets() - start >= 40, 30_000, 20)
  t.equal(answered, ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode,
    `the caller's count is full and its only check in flight died with its instance a deadline ago: 4005 at once (${answered === undefined ? 'still waiting after 40 polls of the store' : `got ${answered}`})`)
  const pending = await client.get(`${prefix}:{_caller:ip:127.0.0.1}:unverified-pending`)
  const ttl = await client.pttl(`${prefix}:{_caller:ip:127.0.0.1}:unverified-pending`)
  t.comment(`unverified-pending = ${pending}, for ${Math.round(ttl / 1000)} s more`)
  await app.close()
  await next
})
