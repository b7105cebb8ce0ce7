/** A direct answer to a client that left before it: nothing thrown, counted, the service goes on serving. */
import t from 'tap'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { RawConnection, envelopeOf, listen, rawPost } from './helpers/raw-http.js'
import { until } from './helpers/until.js'

const CURRENT = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

t.test('a client gone before its direct answer', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'latency', ms: 300 }, times: 1 })
  const { app, logs } = await build(t, { upstream: url })
  const port = await listen(app)
  const gone = await RawConnection.open(port)
  gone.write(rawPost(CURRENT, body, { 'x-request-id': 'gone-1' }))
  t.ok(await until(() => mock.calls('stable_token') === 1), 'the miss went upstream')
  gone.socket.destroy()
  await gone.done
  const scrape = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.ok(await until(async () => (await scrape()).includes(`wxtoken_requests_total{route="${CURRENT}",status_code="200"} 1`)), 'counted once')
  const next = await RawConnection.open(port)
  t.teardown(() => { next.socket.destroy() })
  next.write(rawPost(CURRENT, body))
  t.equal(envelopeOf(await next.response()).statusCode, 200, 'the next caller is served')
  t.notOk(logs.records.some((r) => Number(r.level) >= 50), 'no error logged')
})
