import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, build, post, startMock } from './helpers/build.js'
import { envelopeOf, exchange, listen, rawPost } from './helpers/raw-http.js'

const CURRENT = '/api/v3/get-wechat-access-token-info'
const OBSOLETE = '/api/v3/get-wechat-access-token'
const body = { appId: APP_ID, appSecret: APP_SECRET }

t.test('both routes answer the GenAuth envelope with the same cached token', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const before = Math.floor(Date.now() / 1000)
  const first = await post(app, CURRENT, body)
  t.equal(first.res.statusCode, 200)
  t.equal(first.body.statusCode, 200)
  t.equal(first.body.message, 'Operation successful')
  t.notOk('apiCode' in first.body, 'no apiCode on success')
  t.match(first.body.requestId, /^[0-9a-f-]{36}$/)
  t.equal(first.res.headers['x-request-id'], first.body.requestId)
  const data = first.body.data!
  t.equal(mock.check(data.accessToken), 'valid', 'the token is one WeChat issued')
  t.type(data.expiresAt, 'string')
  t.match(data.expiresAt, /^\d+$/)
  t.ok(Number(data.expiresAt) >= before + 7199 && Number(data.expiresAt) <= before + 7201, 'expiresAt is Unix seconds 7200 s ahead')
  t.ok(data.expiresIn > 7190 && data.expiresIn <= 7200)
  t.notOk(first.res.headers.deprecation, 'the current route is not deprecated')

  const second = await post(app, OBSOLETE, body)
  t.equal(second.body.statusCode, 200)
  t.equal(second.body.data?.accessToken, data.accessToken, 'served from cache')
  t.equal(second.res.headers.deprecation, '@1704067200')
  t.match(second.res.headers.link, /get-wechat-access-token-info>; rel="successor-version"/)
  const refused = await post(app, OBSOLETE, { appId: 'wx123', appSecret: APP_SECRET })
  t.equal(refused.body.apiCode, 1002, 'a refused request on the obsolete route...')
  t.equal(refused.res.headers.deprecation, '@1704067200', '...still says the route is deprecated')
  const other = await post(app, CURRENT, { appId: 'wx123', appSecret: APP_SECRET })
  t.notOk(other.res.headers.deprecation, 'and the current route\'s errors do not')
  t.equal(mock.issued(APP_ID), 1, 'one token issued for two requests')
  t.equal(mock.calls('stable_token'), 1, 'stable mode by default')
})

t.test('classic mode fetches with GET /cgi-bin/token', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { WECHAT_TOKEN_MODE: 'classic' } })
  const { body: envelope } = await post(app, CURRENT, body)
  t.equal(envelope.statusCode, 200)
  t.equal(mock.calls('token'), 1)
  t.equal(mock.calls('stable_token'), 0)
})

t.test('concurrent misses in one process share one upstream call', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'latency', ms: 100 }, times: 1 })
  const { app } = await build(t, { upstream: url, env: { WECHAT_TOKEN_MODE: 'classic' } })
  const answers = await Promise.all(Array.from({ length: 50 }, async () => await post(app, CURRENT, body)))
  const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
  t.equal(tokens.size, 1)
  t.equal(mock.issued(APP_ID), 1)
})

t.test('requestId honours a sane x-request-id and replaces an unsafe one', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const sane = await post(app, CURRENT, body, { 'x-request-id': 'trace-42.abc:1' })
  t.equal(sane.body.requestId, 'trace-42.abc:1')
  t.equal(sane.res.headers['x-request-id'], 'trace-42.abc:1')
  const unsafe = await post(app, CURRENT, body, { 'x-request-id': 'a b<script>' })
  t.not(unsafe.body.requestId, 'a b<script>')
  t.match(unsafe.body.requestId, /^[0-9a-f-]{36}$/)
  const tooLong = await post(app, CURRENT, body, { 'x-request-id': 'x'.repeat(200) })
  t.equal(tooLong.body.requestId.length, 36)
})

t.test('SDK headers of either brand are accepted, none required', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const variants: Array<Record<string, string>> = [
    {},
    { 'x-authing-app-id': 'app1', 'x-authing-request-from': 'sdk', authorization: 'raw-token' },
    { 'x-genauth-app-id': 'app1', 'x-genauth-request-from': 'java-sdk', authorization: 'Bearer x' },
    { 'x-authing-userpool-id': 'pool1' }
  ]
  for (const headers of variants) {
    const { res, body: envelope } = await post(app, CURRENT, body, headers)
    t.equal(res.statusCode, 200)
    t.equal(envelope.statusCode, 200, JSON.stringify(headers))
  }
})

t.test('bad input gets an envelope with a documented apiCode', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const cases: Array<{ name: string, payload: string, contentType?: string, apiCode: number, statusCode: number, message: RegExp }> = [
    { name: 'invalid JSON', payload: '{"appId":', apiCode: 1001, statusCode: 400, message: /not valid JSON/ },
    { name: 'empty JSON body', payload: '', apiCode: 1001, statusCode: 400, message: /empty/ },
    { name: 'missing appSecret', payload: JSON.stringify({ appId: APP_ID }), apiCode: 1002, statusCode: 400, message: /^appSecret is required$/ },
    { name: 'missing appId', payload: JSON.stringify({ appSecret: APP_SECRET }), apiCode: 1002, statusCode: 400, message: /^appId is required$/ },
    { name: 'non-string appId', payload: JSON.stringify({ appId: 12345, appSecret: APP_SECRET }), apiCode: 1002, statusCode: 400, message: /^appId must be a string$/ },
    { name: 'non-string appSecret', payload: JSON.stringify({ appId: APP_ID, appSecret: ['x'] }), apiCode: 1002, statusCode: 400, message: /^appSecret must be a string$/ },
    { name: 'malformed appId', payload: JSON.stringify({ appId: 'wx123', appSecret: APP_SECRET }), apiCode: 1002, statusCode: 400, message: /appId must be a WeChat AppID/ },
    { name: 'malformed appSecret', payload: JSON.stringify({ appId: APP_ID, appSecret: 'short' }), apiCode: 1002, statusCode: 400, message: /appSecret must be a WeChat AppSecret/ },
    { name: 'array body', payload: '[1,2]', apiCode: 1002, statusCode: 400, message: /JSON object/ },
    { name: 'string body', payload: '"hello"', apiCode: 1002, statusCode: 400, message: /JSON object/ },
    { name: 'prototype pollution', payload: `{"appId":"${APP_ID}","appSecret":"${APP_SECRET}","__proto__":{"x":1}}`, apiCode: 1001, statusCode: 400, message: /not valid JSON.*__proto__/ },
    { name: 'oversized body', payload: JSON.stringify({ appId: APP_ID, appSecret: APP_SECRET, pad: 'x'.repeat(20000) }), apiCode: 1003, statusCode: 413, message: /too large/ },
    { name: 'form body', payload: 'appId=wx', contentType: 'application/x-www-form-urlencoded', apiCode: 1004, statusCode: 400, message: /application\/json/ },
    { name: 'text/plain body', payload: JSON.stringify(body), contentType: 'text/plain', apiCode: 1004, statusCode: 400, message: /application\/json/ },
    { name: 'text/plain body with a charset', payload: JSON.stringify(body), contentType: 'text/plain; charset=utf-8', apiCode: 1004, statusCode: 400, message: /application\/json/ }
  ]
  for (const c of cases) {
    const res = await app.inject({
      method: 'POST',
      url: CURRENT,
      headers: { 'content-type': c.contentType ?? 'application/json' },
      payload: c.payload
    })
    t.equal(res.statusCode, 200, `${c.name}: HTTP 200 as GenAuth answers business errors`)
    const envelope = res.json()
    t.equal(envelope.apiCode, c.apiCode, `${c.name}: apiCode`)
    t.equal(envelope.statusCode, c.statusCode, `${c.name}: statusCode`)
    t.match(envelope.message, c.message, `${c.name}: message`)
    t.equal(envelope.requestId, res.headers['x-request-id'], `${c.name}: requestId`)
  }
  const noBody = await app.inject({ method: 'POST', url: OBSOLETE })
  t.equal(noBody.json().apiCode, 1002, 'no body at all')
  t.equal(mock.calls('stable_token'), 0, 'bad input never reaches WeChat')
})

t.test('an unknown route is a real 404 with the envelope', async (t) => {
  const { app } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9' } })
  for (const [method, url] of [['GET', '/nope'], ['GET', CURRENT], ['DELETE', OBSOLETE]] as const) {
    const res = await app.inject({ method, url })
    t.equal(res.statusCode, 404)
    t.same({ ...res.json(), requestId: 'x' }, {
      statusCode: 404, apiCode: ApiCodes.ROUTE_NOT_FOUND.apiCode, message: `Route ${method} ${url} not found`, requestId: 'x'
    })
  }
})

t.test('a secret that differs from the cached token\'s is checked with WeChat once, and never yields a token', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const good = await post(app, CURRENT, body)
  t.equal(good.body.statusCode, 200)
  const calls = () => mock.calls('stable_token')
  const before = calls()

  const wrong = await post(app, CURRENT, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(wrong.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'WeChat was asked and refused it')
  t.notOk(wrong.body.data, 'no token')
  t.notMatch(JSON.stringify(wrong.body), good.body.data!.accessToken)
  t.equal(calls() - before, 1, 'one upstream check')

  const again = await post(app, CURRENT, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(again.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode)
  t.match(again.body.message, /remembered/)
  t.equal(calls() - before, 1, 'the refusal is remembered: no second upstream call')

  const third = await post(app, CURRENT, { appId: APP_ID, appSecret: APP_SECRET.toUpperCase() })
  t.equal(third.body.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode, 'another secret is checked too')
  t.notOk(third.body.data)
  t.equal(calls() - before, 2)
  for (let i = 0; i < 3; i++) await post(app, CURRENT, { appId: APP_ID, appSecret: `${i}`.repeat(32) })
  const past = await post(app, CURRENT, { appId: APP_ID, appSecret: 'a'.repeat(32) })
  t.equal(past.body.apiCode, ApiCodes.UNVERIFIED_CHECKS_LIMITED.apiCode, 'past the caller\'s allowance for this app: refused without asking')
  t.equal(past.body.statusCode, 429)
  t.notOk(past.body.data)
  t.equal(calls(), 6, 'five refused checks per caller per app and window (UNVERIFIED_CHECKS_PER_APP); the first fetch, accepted, cost nothing')

  const original = await post(app, CURRENT, body)
  t.equal(original.body.data?.accessToken, good.body.data?.accessToken, 'the right secret still gets the cached token')
})

t.test('a token is served only while it has more than the margin left', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock, env: { WECHAT_TOKEN_MODE: 'classic', TOKEN_SERVE_MARGIN_SECONDS: '600', REFRESH_AHEAD_SECONDS: '601' } })
  const first = await post(app, CURRENT, body)
  clock.advance((7200 - 601) * 1000)
  const stillGood = await post(app, CURRENT, body)
  t.equal(stillGood.body.data?.accessToken, first.body.data?.accessToken, '601 s left: served from cache')
  t.ok(stillGood.body.data!.expiresIn <= 601)
  t.equal(mock.issued(APP_ID), 1)
  clock.advance(2000)
  const renewed = await post(app, CURRENT, body)
  t.not(renewed.body.data?.accessToken, first.body.data?.accessToken, '599 s left: fetched anew')
  t.equal(mock.issued(APP_ID), 2)
})

t.test('WeChat errcodes become envelopes naming the errcode; non-retryable ones are tried once', async (t) => {
  // An app per errcode: some of them back their app off (tested in upstream-outage.test.ts).
  const { mock, url } = await startMock(t, { autoRegister: true })
  const { app } = await build(t, { upstream: url, env: { NEGATIVE_CACHE_SECONDS: '0', UNVERIFIED_CHECKS_PER_APP: '100' } })
  const cases = [
    { errcode: 40013, api: ApiCodes.WECHAT_INVALID_APPID },
    { errcode: 40125, api: ApiCodes.WECHAT_INVALID_SECRET },
    { errcode: 40164, api: ApiCodes.WECHAT_IP_NOT_ALLOWED },
    { errcode: 40243, api: ApiCodes.WECHAT_SECRET_FROZEN },
    { errcode: 45009, api: ApiCodes.WECHAT_DAILY_QUOTA },
    { errcode: 45011, api: ApiCodes.WECHAT_RATE_LIMITED },
    { errcode: 89503, api: ApiCodes.WECHAT_IP_NOT_ALLOWED },
    { errcode: 89506, api: ApiCodes.WECHAT_IP_NOT_ALLOWED },
    { errcode: 89507, api: ApiCodes.WECHAT_IP_NOT_ALLOWED },
    { errcode: 40002, api: ApiCodes.WECHAT_ERROR },
    { errcode: 99999, api: ApiCodes.WECHAT_ERROR }
  ]
  for (const [i, c] of cases.entries()) {
    mock.clearFaults()
    mock.inject({ fault: { kind: 'errcode', errcode: c.errcode } })
    const before = mock.calls('stable_token')
    const { res, body: envelope } = await post(app, CURRENT, { ...body, appId: `wx${(0xe000 + i).toString(16).padStart(16, '0')}` })
    t.equal(res.statusCode, 200)
    t.equal(envelope.apiCode, c.api.apiCode, `errcode ${c.errcode}: apiCode`)
    t.equal(envelope.statusCode, c.api.statusCode, `errcode ${c.errcode}: statusCode`)
    t.match(envelope.message, new RegExp(`errcode ${c.errcode}\\b.*rid [0-9a-f]{8}-`), `errcode ${c.errcode}: named with its rid`)
    t.notMatch(envelope.message, APP_SECRET)
    t.equal(mock.calls('stable_token') - before, 1, `errcode ${c.errcode}: not retried`)
  }
})

t.test('errcode -1, HTTP 5xx and dropped connections are retried at most twice', async (t) => {
  // An app per case, each configured (its secret known to be right): a failed fetch backs its app off, and the next
  // fetch of a failing app makes one attempt; a failed check of a secret not yet known backs its caller off.
  const appFor = (i: number) => ({ ...body, appId: `wx${(0xf000 + i).toString(16).padStart(16, '0')}` })
  const configured = Object.fromEntries([1, 2, 3].map((i) => [appFor(i).appId, APP_SECRET]))
  const { mock, url } = await startMock(t, { apps: configured })
  const { app } = await build(t, { upstream: url, env: { WECHAT_APPS: JSON.stringify(configured), SCHEDULER_INTERVAL_SECONDS: '0' } })
  mock.inject({ fault: { kind: 'errcode', errcode: -1 } })
  const busy = await post(app, CURRENT, appFor(1))
  t.equal(busy.body.apiCode, ApiCodes.WECHAT_BUSY.apiCode)
  t.equal(busy.body.statusCode, 503)
  t.equal(mock.calls('stable_token'), 3, 'one try and two retries')

  mock.clearFaults()
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const bad = await post(app, CURRENT, appFor(2))
  t.equal(bad.body.apiCode, ApiCodes.WECHAT_BAD_RESPONSE.apiCode)
  t.equal(mock.calls('stable_token'), 6)

  mock.clearFaults()
  mock.inject({ fault: { kind: 'drop' }, times: 2 })
  const recovered = await post(app, CURRENT, appFor(3))
  t.equal(recovered.body.statusCode, 200, 'two drops, then a token on the third try')
  t.equal(mock.calls('stable_token'), 9)
})

t.test('a garbage answer is a 502 envelope and is not retried', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  mock.inject({ fault: { kind: 'garbage' } })
  const { body: envelope } = await post(app, CURRENT, body)
  t.equal(envelope.apiCode, ApiCodes.WECHAT_BAD_RESPONSE.apiCode)
  t.equal(envelope.statusCode, 502)
  t.equal(mock.calls('stable_token'), 1)
})

t.test('a hanging upstream costs the caller no more than the request deadline', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { REQUEST_DEADLINE_MS: '400' } })
  mock.inject({ fault: { kind: 'hang' } })
  const started = Date.now()
  const { body: envelope } = await post(app, CURRENT, body)
  const elapsed = Date.now() - started
  t.equal(envelope.apiCode, ApiCodes.WECHAT_UNAVAILABLE.apiCode)
  t.equal(envelope.statusCode, 503)
  t.match(envelope.message, /deadline/)
  t.ok(elapsed < 1400, `answered after ${elapsed} ms`)
})

t.test('an unreachable upstream is a 503 envelope', async (t) => {
  const { app } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9', REQUEST_DEADLINE_MS: '1000' } })
  const { body: envelope } = await post(app, CURRENT, body)
  t.equal(envelope.apiCode, ApiCodes.WECHAT_UNAVAILABLE.apiCode)
  t.match(envelope.message, /could not be reached|deadline/)
})

t.test('health routes', async (t) => {
  const { app } = await build(t, { env: { WECHAT_API_BASE: 'http://127.0.0.1:9' } })
  const live = await app.inject({ method: 'GET', url: '/health/live' })
  t.equal(live.statusCode, 200)
  t.same(live.json(), { status: 'ok' })
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', store: 'memory', storeUp: true, pubsubUp: true })
})

t.test('a query string is never logged nor echoed: log lines carry the matched route, messages the path only', async (t) => {
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url })
  const values = ['q-value-7e1f0c', 'q-value-9a2b4d', 'q-value-3c5e6f']
  const ok = await post(app, `${CURRENT}?note=${values[0]}`, body)
  t.equal(ok.body.statusCode, 200)
  const refused = await post(app, `${CURRENT}?note=${values[1]}`, { appId: 'wx123', appSecret: APP_SECRET })
  t.equal(refused.body.apiCode, ApiCodes.INVALID_ARGUMENT.apiCode)
  const missing = await app.inject({ method: 'GET', url: `/nope?x=${values[2]}` })
  t.equal(missing.json().message, 'Route GET /nope not found')
  const userinfo = 'user-info-5d8e2a:pw-1b7c9f'
  const absolute = await exchange(await listen(app), rawPost(`http://${userinfo}@h${CURRENT}`, body))
  t.equal(envelopeOf(absolute).statusCode, 200, 'an absolute-form target with user info, over a socket')
  t.ok(logs.records.some((r) => r.route === CURRENT && r.msg === 'request completed'), 'the matched route is logged')
  for (const value of [...values, userinfo]) t.notMatch(logs.text, value, 'no log line holds the query string or other parts of the target')
})
