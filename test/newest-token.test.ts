/**
 * Classic mode, where every fetch retires the token before it: when the store loses the app's lock mid-fetch (a
 * flush, a Redis restart without persistence) and a second instance fetches too, the token WeChat issued last is the
 * one kept and served, on every instance.
 */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_SECRET, post, startMock } from './helpers/build.js'
import { fleet } from './helpers/fleet.js'
import { RedisServer } from './helpers/redis-server.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const APPS = 30
const appIds = Array.from({ length: APPS }, (_, i) => `wx${(0xa000 + i).toString(16).padStart(16, '0')}`)

for (const fault of ['FLUSHALL', 'kill -9 and restart'] as const) {
  t.test(`a herd of ${APPS} apps over 3 instances, ${fault} while WeChat takes 600 ms: no app serves a retired token`, async (t) => {
    const redis = await RedisServer.start()
    t.teardown(() => redis.stop())
    const { mock, url } = await startMock(t, { autoRegister: true })
    const { apps } = await fleet(t, redis.url, 3, url, { WECHAT_TOKEN_MODE: 'classic', UNVERIFIED_CHECKS_PER_CALLER: '1000' })
    // WeChat issues each token when its 600 ms are up: of two overlapping fetches, the one answered last is the newest.
    mock.inject({ fault: { kind: 'latency', ms: 600 }, endpoint: 'token' })
    const herd = Promise.all(appIds.flatMap((appId) => apps.flatMap((app) =>
      Array.from({ length: 3 }, async () => await post(app, ROUTE, { appId, appSecret: APP_SECRET })))))
    while (mock.calls('token') < APPS) await new Promise((resolve) => setTimeout(resolve, 10))
    if (fault === 'FLUSHALL') {
      const client = redis.client()
      await client.flushall()
      client.disconnect()
    } else {
      await redis.stop()
      await redis.restart()
    }
    const answers = await herd
    const codes = new Map<number, number>()
    for (const answer of answers) codes.set(answer.body.apiCode ?? 200, (codes.get(answer.body.apiCode ?? 200) ?? 0) + 1)
    t.comment(`answers by apiCode: ${JSON.stringify(Object.fromEntries(codes))}; ${mock.calls('token')} token calls`)
    // After a FLUSHALL the waiters find the locks gone at their next poll, so some apps are fetched twice. After a
    // restart that depends on whether a waiter polled while Redis was down: the guarantee below holds either way.
    if (fault === 'FLUSHALL') t.ok(mock.calls('token') > APPS, 'the store lost the locks: some apps were fetched twice')
    mock.clearFaults()
    for (const app of apps) {
      while ((await app.inject({ method: 'GET', url: '/health/ready' })).json<{ storeUp: boolean }>().storeUp !== true) {
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    // Five minutes on, WeChat has retired every token that was not the latest of its app.
    mock.advance(6 * 60_000)
    let dead = 0
    let served = 0
    for (const appId of appIds) {
      for (const app of apps) {
        const { body } = await post(app, ROUTE, { appId, appSecret: APP_SECRET })
        if (body.statusCode !== 200) continue
        served++
        if (mock.check(body.data!.accessToken) !== 'valid') dead++
      }
    }
    t.equal(served, APPS * 3, 'every app answered on every instance')
    t.equal(dead, 0, `no instance serves a retired token (${dead} of ${served})`)
    t.notOk(answers.some((a) => a.body.apiCode === ApiCodes.INTERNAL.apiCode), 'and no internal error during the herd')
  })
}
