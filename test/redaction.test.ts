import t from 'tap'
import { APP_ID, APP_SECRET, OTHER_SECRET, LogCapture, build, post, startMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'
import { createLogger } from '../src/logger.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const OBSOLETE = '/api/v3/get-wechat-access-token'
const REFRESH = '/api/v3/refresh-wechat-access-token'
const CALLER_KEY = 'caller-key-5f1c9e0a7b3d'
const secrets = [APP_SECRET, OTHER_SECRET, CALLER_KEY]

t.test('no secret and no token in any log line, at trace, on any path', async (t) => {
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  const captured: LogCapture[] = []
  const seenTokens = new Set<string>()
  const headers = { authorization: `Bearer ${CALLER_KEY}`, 'x-authing-app-id': 'caller-app' }

  for (const mode of ['stable', 'classic']) {
    const { mock, url } = await startMock(t)
    const { app, logs } = await build(t, {
      upstream: url,
      env: { WECHAT_TOKEN_MODE: mode, REDIS_URL: redis.url, REDIS_KEY_PREFIX: `redact-${mode}`, REQUEST_DEADLINE_MS: '500', REDIS_COMMAND_TIMEOUT_MS: '300' }
    })
    captured.push(logs)
    const ok = await post(app, ROUTE, { appId: APP_ID, appSecret: APP_SECRET }, headers)
    t.equal(ok.body.statusCode, 200, `${mode}: success`)
    await post(app, OBSOLETE, { appId: APP_ID, appSecret: APP_SECRET }, headers)
    await post(app, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET }, headers)
    await post(app, ROUTE, { appId: 'wx123', appSecret: APP_SECRET }, headers)
    await post(app, ROUTE, `{"appId":"${APP_ID}","appSecret":"${APP_SECRET}"`, headers)
    await post(app, ROUTE, { appId: APP_ID, appSecret: APP_SECRET, pad: 'x'.repeat(10000) }, headers)
    const current = ok.body.data!.accessToken
    await post(app, REFRESH, { appId: APP_ID, appSecret: APP_SECRET, accessToken: current }, headers)
    await post(app, REFRESH, { appId: APP_ID, appSecret: APP_SECRET, accessToken: current }, headers)
    await post(app, REFRESH, { appId: APP_ID, appSecret: OTHER_SECRET, accessToken: current }, headers)
    await post(app, REFRESH, { appId: APP_ID, appSecret: APP_SECRET, accessToken: 'x'.repeat(5000) }, headers)
    const otherApp = 'wx00000000000000ff'
    for (const fault of [
      { kind: 'errcode', errcode: 40125 },
      { kind: 'errcode', errcode: -1 },
      { kind: 'http', status: 503 },
      { kind: 'drop' },
      { kind: 'garbage' },
      { kind: 'hang' }
    ] as const) {
      mock.clearFaults()
      mock.inject({ fault })
      await post(app, ROUTE, { appId: otherApp, appSecret: OTHER_SECRET }, headers)
    }
    mock.clearFaults()
    await redis.stop()
    await post(app, ROUTE, { appId: APP_ID, appSecret: APP_SECRET }, headers)
    await post(app, ROUTE, { appId: 'wx00000000000000ee', appSecret: APP_SECRET }, headers)
    await app.inject({ method: 'GET', url: '/health/ready' })
    await redis.restart()
    for (const token of mock.issuedTokens()) seenTokens.add(token)
  }

  t.ok(seenTokens.size >= 2, 'tokens were issued')
  const text = captured.map((logs) => logs.text).join('\n')
  t.ok(text.length > 1000, 'the scenarios logged')
  t.match(text, /"level":10|"level":20/, 'trace/debug lines are present')
  t.match(text, /errcode 40125/, 'upstream errors are logged')
  t.match(text, /store unavailable: fetching directly/, 'the outage is logged (stable)')
  t.match(text, /token store is unavailable, and in classic mode/, 'the outage is logged (classic)')
  t.match(text, /"audit":"forced-refresh"/, 'forced refreshes are audited')
  for (const secret of secrets) t.notOk(text.includes(secret), `secret ${secret.slice(0, 4)}… never logged`)
  for (const token of seenTokens) t.notOk(text.includes(token), `token ${token.slice(0, 6)}… never logged`)
})

t.test('the logger redacts fields that can hold a secret, a token, a ticket, a phone code or number, wherever they are passed', async (t) => {
  const logs = new LogCapture()
  const logger = createLogger('trace', logs)
  logger.info({ appSecret: APP_SECRET, body: { appSecret: APP_SECRET }, req: { headers: { authorization: CALLER_KEY } } }, 'a')
  logger.info({ data: { accessToken: 'tok-1' }, accessToken: 'tok-2', entry: { accessToken: 'tok-3', secret: APP_SECRET } }, 'b')
  logger.info({ ticket: 'tkt-1', data: { ticket: 'tkt-2', phoneNumber: '13900000001', purePhoneNumber: '13900000002' } }, 'c')
  logger.info({ body: { code: 'code-1' }, phone_info: { phoneNumber: '13900000003' }, answer: { phone_info: { countryCode: '86' } }, code: 'ERR_KEPT' }, 'd')
  for (const value of [APP_SECRET, CALLER_KEY, 'tok-1', 'tok-2', 'tok-3', 'tkt-1', 'tkt-2', '13900000001', '13900000002', 'code-1', '13900000003']) {
    t.notOk(logs.text.includes(value), value)
  }
  t.match(logs.text, /ERR_KEPT/, 'an error code is not a phone code: kept')
  t.match(logs.text, /\[redacted\]/)
})
