/** GenAuth's Mini Program phone-number route: a getPhoneNumber code exchanged with the configured Mini Program's token. */
import t from 'tap'
import { loadConfig } from '../src/config.js'
import { APP_ID, APP_SECRET, build, post, startMock } from './helpers/build.js'

const PHONE = '/api/v3/get-wechat-miniprogram-phone'
const IDENTIFIER = 'my-wxapp'
const env = {
  WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }),
  WECHAT_IDENTIFIERS: JSON.stringify({ [IDENTIFIER]: APP_ID }),
  SCHEDULER_INTERVAL_SECONDS: '0'
}

interface Phone { phoneNumber: string, purePhoneNumber: string, countryCode: string, watermark: { timestamp: number, appid: string } }
type PhoneData = Phone & { phone_info: Phone }

t.test('a code gives the number, in data and in data.phone_info, unchanged', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env })
  const code = mock.mintPhoneCode(APP_ID, '13912345678')
  const { res, body } = await post<PhoneData>(app, PHONE, { code, extIdpConnidentifier: IDENTIFIER })
  t.equal(res.statusCode, 200)
  t.equal(body.statusCode, 200, body.message)
  const data = body.data!
  t.equal(data.phoneNumber, '13912345678')
  t.equal(data.purePhoneNumber, '13912345678')
  t.equal(data.countryCode, '86')
  t.equal(data.watermark.appid, APP_ID)
  t.type(data.watermark.timestamp, 'number')
  t.same(data.phone_info, { phoneNumber: data.phoneNumber, purePhoneNumber: data.purePhoneNumber, countryCode: '86', watermark: data.watermark })

  // As GenAuth's server SDKs read it (GetWechatMiniProgramPhoneRespDto: statusCode, data.phoneNumber) ...
  t.equal(body.data?.phoneNumber, '13912345678')
  // ... and as the Mini Program SDK does (@authing/miniapp-wx getPhone): statusCode 200, then data.phone_info or an error.
  const unwrapped = (body.statusCode === 200 ? body.data : undefined) as { phone_info?: Phone } | undefined
  t.equal(unwrapped?.phone_info?.purePhoneNumber, '13912345678')

  const foreign = mock.mintPhoneCode(APP_ID, '2025550123', '1')
  const us = (await post<PhoneData>(app, PHONE, { code: foreign, extIdpConnidentifier: IDENTIFIER })).body.data!
  t.equal(us.phoneNumber, '+12025550123', 'with its country code, as WeChat gives it')
  t.equal(us.purePhoneNumber, '2025550123')

  t.equal(mock.issued(APP_ID), 1, 'one token for both calls')
  t.notOk(logs.text.includes('13912345678') || logs.text.includes(code), 'neither the number nor the code is logged')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.notOk(metrics.includes('13912345678') || metrics.includes(code), 'nor in a metric')
  t.match(metrics, /wxtoken_upstream_calls_total\{endpoint="getuserphonenumber",errcode="0"\} 2/)
  t.match(metrics, /wxtoken_requests_total\{route="\/api\/v3\/get-wechat-miniprogram-phone",status_code="200"\} 2/)
})

t.test('a used, unknown or expired code: apiCode 3012', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  const code = mock.mintPhoneCode(APP_ID)
  t.equal((await post(app, PHONE, { code, extIdpConnidentifier: IDENTIFIER })).body.statusCode, 200)
  const again = await post(app, PHONE, { code, extIdpConnidentifier: IDENTIFIER })
  t.equal(again.body.apiCode, 3012, again.body.message)
  t.equal(again.body.data, undefined)
  t.notOk(again.body.message.includes(code), 'the message does not repeat the code')
  t.equal((await post(app, PHONE, { code: 'f'.repeat(64), extIdpConnidentifier: IDENTIFIER })).body.apiCode, 3012)
  const late = mock.mintPhoneCode(APP_ID)
  mock.advance(5 * 60_000 + 1000)
  t.equal((await post(app, PHONE, { code: late, extIdpConnidentifier: IDENTIFIER })).body.apiCode, 3012, 'a code lives 5 minutes')
  t.equal(mock.issued(APP_ID), 1, 'a refused code never replaces the token')
})

t.test('identifiers: unknown, or none configured: apiCode 2004 with no upstream call; bad input: 1002', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  const code = mock.mintPhoneCode(APP_ID)
  t.equal((await post(app, PHONE, { code, extIdpConnidentifier: 'other-app' })).body.apiCode, 2004)
  for (const payload of [{ code }, { extIdpConnidentifier: IDENTIFIER }, { code: '', extIdpConnidentifier: IDENTIFIER },
    { code: 'with space', extIdpConnidentifier: IDENTIFIER }, { code, extIdpConnidentifier: 'a/b' }, { code: 1, extIdpConnidentifier: IDENTIFIER }]) {
    const { body } = await post(app, PHONE, payload)
    t.equal(body.apiCode, 1002, `${JSON.stringify(payload).slice(0, 60)}: ${body.message}`)
  }
  const { app: bare } = await build(t, { upstream: url })
  t.equal((await post(bare, PHONE, { code, extIdpConnidentifier: IDENTIFIER })).body.apiCode, 2004, 'without WECHAT_IDENTIFIERS')
  t.equal(mock.calls('getuserphonenumber') + mock.issued(APP_ID), 0, 'nothing reached WeChat')
})

t.test('a token invalidated elsewhere: replaced once, and the same code still works', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, HOT_CACHE_MS: '60000' } })
  t.equal((await post(app, PHONE, { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: IDENTIFIER })).body.statusCode, 200)
  mock.revokeTokens(APP_ID)
  const { body } = await post<PhoneData>(app, PHONE, { code: mock.mintPhoneCode(APP_ID, '13700000000'), extIdpConnidentifier: IDENTIFIER })
  t.equal(body.statusCode, 200, body.message)
  t.equal(body.data?.purePhoneNumber, '13700000000')
  t.equal(mock.issued(APP_ID), 2, 'one token refresh')
  t.equal(mock.calls('getuserphonenumber'), 3, 'refused once, then answered')
})

t.test('a phone call is not sent again once it may have reached WeChat (the code works once)', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  mock.inject({ fault: { kind: 'drop' }, endpoint: 'getuserphonenumber', times: 1 })
  const { body } = await post(app, PHONE, { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: IDENTIFIER })
  t.equal(body.apiCode, 3008, body.message)
  t.equal(mock.calls('getuserphonenumber'), 1, 'no retry')
  mock.inject({ fault: { kind: 'errcode', errcode: -1 }, endpoint: 'getuserphonenumber', times: 1 })
  const busy = await post(app, PHONE, { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: IDENTIFIER })
  t.equal(busy.body.statusCode, 200, '-1 (system busy) is retried: WeChat did not take the code')
})

t.test('WECHAT_IDENTIFIERS is checked at start', async (t) => {
  const apps = JSON.stringify({ [APP_ID]: APP_SECRET })
  t.throws(() => loadConfig({ WECHAT_IDENTIFIERS: JSON.stringify({ a: APP_ID }) }), /needs WECHAT_APPS/)
  t.throws(() => loadConfig({ WECHAT_APPS: apps, WECHAT_IDENTIFIERS: JSON.stringify({ a: 'wxffffffffffffffff' }) }), /not one of WECHAT_APPS/)
  t.throws(() => loadConfig({ WECHAT_APPS: apps, WECHAT_IDENTIFIERS: '[]' }), /JSON object/)
  t.throws(() => loadConfig({ WECHAT_APPS: apps, WECHAT_IDENTIFIERS: '{}' }), /lists no identifier/)
  t.throws(() => loadConfig({ WECHAT_APPS: apps, WECHAT_IDENTIFIERS: JSON.stringify({ 'a b': APP_ID }) }), /must be 1 to 128/)
  t.ok(loadConfig({ WECHAT_APPS: apps, WECHAT_IDENTIFIERS: JSON.stringify({ [IDENTIFIER]: APP_ID.toUpperCase().replace('WX', 'wx') }) }))
})

t.test('one deadline for the whole request: the token, the call, a replaced token and the second call', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, REQUEST_DEADLINE_MS: '1000', LOCK_LEASE_MS: '1500', WECHAT_MAX_RETRIES: '0' } })
  mock.inject({ fault: { kind: 'latency', ms: 700 }, endpoint: 'stable_token' })
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: 'getuserphonenumber', times: 1 })
  mock.inject({ fault: { kind: 'hang' }, endpoint: 'getuserphonenumber' })
  const started = Date.now()
  const { body } = await post(app, PHONE, { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: IDENTIFIER })
  const took = Date.now() - started
  t.equal(body.apiCode, 3008, body.message)
  t.ok(took < 1400, `answered after ${took} ms, with REQUEST_DEADLINE_MS=1000`)
})

t.test('RATE_LIMIT_PER_APP counts phone requests per identifier, from the field the route checks', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, RATE_LIMIT_PER_APP: '3' } })
  const answers = []
  for (let i = 0; i < 10; i++) {
    // An extra appId (any type, a new one each time) is not the route's: it neither crashes the limit nor escapes it.
    const extra = [1, null, true, {}, [], `wx${i.toString(16).padStart(16, '0')}`][i % 6]
    const { res, body } = await post(app, PHONE, { code: `junk-${i}`, extIdpConnidentifier: IDENTIFIER, appId: extra })
    answers.push(res.statusCode === 429 ? 4004 : body.apiCode)
  }
  t.same(answers, [3012, 3012, 3012, 4004, 4004, 4004, 4004, 4004, 4004, 4004])
  t.equal(mock.calls('getuserphonenumber'), 3)
})
