/**
 * A check of a secret not yet verified that fails without any answer about the secret (the egress refusing
 * connections, WeChat answering HTTP 502) gives its place in the caller's counts back (the caller's checks are backed
 * off meanwhile instead), so a backend that sends its right secrets while WeChat, or the way to it, is down is served
 * within a minute of WeChat's recovery, not refused with 4005 for the rest of the window.
 */
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { TestClock, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const { fleet } = await fleetRedis(t)

const appIds = Array.from({ length: 61 }, (_, i) => `wx${(0xb000 + i).toString(16).padStart(16, '0')}`)
const secretOf = (i: number): string => (0xc0ffee00 + i).toString(16).padStart(32, '0')

t.test('the egress refusing connections while a backend sends the right secrets of 60 apps: once WeChat is reachable, the backend is served', async (t) => {
  const { mock, url } = await startMock(t, { apps: Object.fromEntries(appIds.map((appId, i) => [appId, secretOf(i)])) })
  const port = Number(new URL(url).port)
  const clock = new TestClock()
  const { apps } = await fleet(t, 1, url, {}, clock)
  await mock.close()
  let failed = 0
  for (let i = 0; i < 60; i++) {
    const { body } = await post(apps[0]!, TOKEN, { appId: appIds[i], appSecret: secretOf(i) })
    // WeChat unreachable (3008); then the caller's checks are backed off too (4007), which bounds them.
    if (body.apiCode === ApiCodes.WECHAT_UNAVAILABLE.apiCode || body.apiCode === ApiCodes.UPSTREAM_BACKOFF.apiCode) failed++
  }
  t.equal(failed, 60, 'each app: WeChat unreachable (3008), or the caller\'s checks backed off meanwhile (4007)')
  t.equal(mock.calls('stable_token'), 0, 'no request reached WeChat')
  await mock.start(port)
  clock.advance(61_000)
  const fresh = await post(apps[0]!, TOKEN, { appId: appIds[60], appSecret: secretOf(60) })
  t.equal(fresh.body.statusCode, 200, `a minute after WeChat is reachable again, the right secret of an app never tried is served (got apiCode ${fresh.body.apiCode})`)
  const retried = await post(apps[0]!, TOKEN, { appId: appIds[0], appSecret: secretOf(0) })
  t.equal(retried.body.statusCode, 200, `and so is one tried during the outage (got apiCode ${retried.body.apiCode})`)
})

t.test('WeChat answering HTTP 502 for half a minute while the owner checks a secret not yet verified (a new app, a rotated secret): once WeChat is back, the owner is served', async (t) => {
  const appId = appIds[0]!
  const { mock, url } = await startMock(t, { apps: { [appId]: secretOf(0) } })
  const clock = new TestClock()
  const { apps } = await fleet(t, 1, url, {}, clock)
  mock.inject({ fault: { kind: 'http', status: 502 } })
  let failed = 0
  // The owner retries each time the backoff ends (1, 2, 4, 8, 16 s): 5 failed checks in 31 s.
  for (let i = 0; i < 5; i++) {
    const { body } = await post(apps[0]!, TOKEN, { appId, appSecret: secretOf(0) })
    if (body.apiCode === ApiCodes.WECHAT_BAD_RESPONSE.apiCode) failed++
    clock.advance(2 ** i * 1000 + 1)
  }
  t.equal(failed, 5, 'five fetches failed with 502 (WeChat said nothing about the secret)')
  mock.clearFaults()
  clock.advance(61_000)
  const after = await post(apps[0]!, TOKEN, { appId, appSecret: secretOf(0) })
  t.equal(after.body.statusCode, 200, `WeChat has been back for a minute: the right secret is served (got apiCode ${after.body.apiCode}: ${after.body.message})`)
})
