/**
 * A replacement of a reported token that failed (the egress refusing connections, WeChat answering 502) is not counted
 * as if it had happened: in stable mode it spends none of the day's forced refreshes and starts no spacing; in classic
 * mode it starts no spacing, and the ticket route does not remember a refusal it never tried again.
 */
import t, { type Test } from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, TestClock, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const { fleet } = await fleetRedis(t)

/** A configured app (stable mode) served once, then the egress refusing connections: the stand-in closed. */
async function egressDown (t: Test) {
  const { mock, url } = await startMock(t)
  const port = Number(new URL(url).port)
  const clock = new TestClock()
  const { apps } = await fleet(t, 1, url, { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const token = (await post(apps[0]!, TOKEN, body)).body.data!.accessToken
  await mock.close()
  return { mock, port, clock, apps, token }
}

t.test('stable mode: an egress outage of 20 minutes, the owner reporting its refused token each minute, spends none of the day\'s 20 forced refreshes', async (t) => {
  const { mock, port, clock, apps, token } = await egressDown(t)
  let unreachable = 0
  for (let i = 0; i < 20; i++) {
    clock.advance(61_000)
    if ((await post(apps[0]!, REFRESH, { ...body, accessToken: token })).body.apiCode === ApiCodes.WECHAT_UNAVAILABLE.apiCode) unreachable++
  }
  t.equal(unreachable, 20, 'each report: WeChat unreachable (3008)')
  await mock.start(port)
  t.equal(mock.forcedCalls(APP_ID), 0, 'WeChat never saw a forced refresh')
  clock.advance(61_000)
  const after = await post(apps[0]!, REFRESH, { ...body, accessToken: token })
  t.equal(after.body.statusCode, 200, `WeChat reachable again: the refused token is replaced (got apiCode ${after.body.apiCode}: ${after.body.message})`)
  t.not(after.body.data?.accessToken, token)
})

t.test('stable mode: a forced refresh that was never sent starts no spacing: the owner\'s report once WeChat is reachable is acted on', async (t) => {
  const { mock, port, clock, apps, token } = await egressDown(t)
  t.equal((await post(apps[0]!, REFRESH, { ...body, accessToken: token })).body.apiCode, ApiCodes.WECHAT_UNAVAILABLE.apiCode, 'the egress refused the connection')
  await mock.start(port)
  clock.advance(2000)
  const after = await post(apps[0]!, REFRESH, { ...body, accessToken: token })
  t.equal(after.body.statusCode, 200, `the backoff over and WeChat reachable: the refused token is replaced (got apiCode ${after.body.apiCode}: ${after.body.message})`)
})

t.test('classic mode: a replacement that got HTTP 502 starts no spacing, and the ticket route is served once WeChat is healthy', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 1, url, { WECHAT_TOKEN_MODE: 'classic', WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }, clock)
  const advance = (ms: number): void => {
    clock.advance(ms)
    mock.advance(ms)
  }
  const token = (await post(apps[0]!, TOKEN, body)).body.data!.accessToken
  // Another system invalidated the app's token: getticket answers 40001 to it.
  mock.revokeTokens(APP_ID)
  // The replacement's fetch meets a WeChat blip (502 on its three attempts).
  mock.inject({ fault: { kind: 'http', status: 502 }, endpoint: 'token', times: 3 })
  const blip = await post(apps[0]!, TICKET, { ...body, type: 'wx_card' })
  t.equal(blip.body.apiCode, ApiCodes.WECHAT_BAD_RESPONSE.apiCode, 'the replacement failed with the blip (3009)')
  advance(2000)
  const inside = await post(apps[0]!, TICKET, { ...body, type: 'wx_card' })
  t.comment(`2 s later, WeChat healthy: apiCode ${inside.body.apiCode} (${inside.body.message})`)
  advance(31_000)
  const later = await post(apps[0]!, TICKET, { ...body, type: 'wx_card' })
  t.equal(later.body.statusCode, 200, `WeChat healthy for 33 s, past the spacing: the token is replaced and a ticket served (got apiCode ${later.body.apiCode}: ${later.body.message})`)
  const served = (await post(apps[0]!, TOKEN, body)).body.data?.accessToken
  t.not(served, token, 'and the token route no longer serves the invalidated token')
})
