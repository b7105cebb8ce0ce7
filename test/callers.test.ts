import t from 'tap'
import type { AddressInfo } from 'node:net'
import { AuthenticationClient } from 'authing-node-sdk'
import { Redis } from 'ioredis'
import { ApiCodes } from '../src/api-codes.js'
import { loadConfig } from '../src/config.js'
import { APP_ID, APP_SECRET, CALLER_KEYS, build, post, startMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const [KEY_A, KEY_B] = CALLER_KEYS as [string, string]
const AUTH = `billing=${KEY_A},${KEY_B}`

t.test('with AUTH_TOKENS, /api routes need a caller key, raw or Bearer', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { AUTH_TOKENS: AUTH } })
  const cases: Array<[string, Record<string, string>, number]> = [
    ['no header', {}, ApiCodes.UNAUTHORIZED.apiCode],
    ['wrong key', { authorization: 'x'.repeat(24) }, ApiCodes.UNAUTHORIZED.apiCode],
    ['a prefix of a key', { authorization: KEY_A.slice(0, -1) }, ApiCodes.UNAUTHORIZED.apiCode],
    ['empty Bearer', { authorization: 'Bearer ' }, ApiCodes.UNAUTHORIZED.apiCode],
    ['raw key (Node / Python SDK)', { authorization: KEY_A }, 0],
    ['Bearer key (Java SDK)', { authorization: `Bearer ${KEY_B}` }, 0],
    ['lower-case bearer', { authorization: `bearer ${KEY_A}` }, 0]
  ]
  for (const [name, headers, apiCode] of cases) {
    const { res, body: envelope } = await post(app, ROUTE, body, headers)
    t.equal(res.statusCode, 200, `${name}: HTTP 200`)
    if (apiCode) {
      t.equal(envelope.apiCode, apiCode, `${name}: refused`)
      t.equal(envelope.statusCode, 401)
      t.notOk(envelope.data)
    } else {
      t.equal(envelope.statusCode, 200, `${name}: accepted`)
    }
  }
  t.equal(mock.calls('stable_token'), 1, 'refused callers never reach WeChat')
  const health = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(health.statusCode, 200, 'health routes need no key')
  t.notMatch(logs.text, KEY_A)
})

t.test('the official SDK sends its accessToken option as the caller key', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { AUTH_TOKENS: AUTH } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const appHost = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const withKey = new AuthenticationClient({ appId: 'x', appSecret: 'y', appHost, accessToken: KEY_A })
  t.equal((await withKey.getWechatMpAccessTokenInfo(body)).statusCode, 200)
  const without = new AuthenticationClient({ appId: 'x', appSecret: 'y', appHost })
  const refused = await without.getWechatMpAccessTokenInfo(body)
  t.equal(refused.statusCode, 401)
  t.equal(refused.apiCode, ApiCodes.UNAUTHORIZED.apiCode)
})

t.test('the caller key name is the caller in the audit trail', async (t) => {
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { AUTH_TOKENS: AUTH } })
  const token = (await post(app, ROUTE, body, { authorization: KEY_A })).body.data!.accessToken
  await post(app, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: token }, { authorization: KEY_A })
  const audit = logs.records.find((r) => r.audit === 'forced-refresh')
  t.equal(audit?.caller, 'billing')
})

t.test('caller keys are validated at start', async (t) => {
  t.throws(() => loadConfig({ AUTH_TOKENS: 'short' }), /AUTH_TOKENS: key 1 must be 16 to 256/)
  t.throws(() => loadConfig({ AUTH_TOKENS: ' , ' }), /AUTH_TOKENS lists no key/)
  t.throws(() => loadConfig({ AUTH_TOKENS: `bad name=${KEY_A}` }), /the name of key 1/)
  t.throws(() => loadConfig({ AUTH_TOKENS: KEY_A, AUTH_TOKENS_FILE: '/x' }), /cannot both be set/)
  // A fixture directory of tap's, removed when the test ends: the file holds caller keys.
  const dir = t.testdir({ keys: `# callers\ncrm=${KEY_A}\n\n${KEY_B}\n` })
  const { loadCallerKeys } = await import('../src/config.js')
  t.same(loadCallerKeys({ AUTH_TOKENS_FILE: `${dir}/keys` }), [{ name: 'crm', key: KEY_A }, { name: 'key2', key: KEY_B }])
})

t.test('rate limits per caller and per appId, shared by instances through Redis, answered with HTTP 429', async (t) => {
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  const { url } = await startMock(t)
  const env = {
    REDIS_URL: redis.url,
    AUTH_TOKENS: AUTH,
    RATE_LIMIT_PER_CALLER: '5',
    RATE_LIMIT_PER_APP: '8',
    RATE_LIMIT_WINDOW_SECONDS: '60'
  }
  const a = (await build(t, { upstream: url, env })).app
  const b = (await build(t, { upstream: url, env })).app
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await post(i % 2 ? b : a, ROUTE, body, { authorization: KEY_A })).res.statusCode)
  t.same(statuses, [200, 200, 200, 200, 200, 429], 'the caller limit (5) holds across two instances')
  const limited = await post(a, ROUTE, body, { authorization: KEY_A })
  t.equal(limited.res.statusCode, 429)
  t.equal(limited.body.statusCode, 429)
  t.equal(limited.body.apiCode, ApiCodes.RATE_LIMITED.apiCode)
  t.match(limited.body.message, /at most 5 requests per 60 s/)
  t.ok(Number(limited.res.headers['retry-after']) > 0, 'retry-after is sent')
  t.equal(limited.body.requestId, limited.res.headers['x-request-id'])

  const other = await post(b, ROUTE, body, { authorization: KEY_B })
  t.equal(other.res.statusCode, 200, 'another caller has its own budget')
  const moreForApp = []
  for (let i = 0; i < 3; i++) moreForApp.push((await post(a, ROUTE, body, { authorization: KEY_B })).res.statusCode)
  t.same(moreForApp, [200, 200, 429], 'the per-app limit (8) counts every caller of the app')
})

t.test('rate-limit keys in Redis name the verified caller (else the IP) and the app, whatever the path spelling', async (t) => {
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  const { url } = await startMock(t)
  const limits = { REDIS_URL: redis.url, RATE_LIMIT_PER_CALLER: '100', RATE_LIMIT_PER_APP: '100' }
  const { app } = await build(t, { upstream: url, env: { ...limits, AUTH_TOKENS: AUTH } })
  for (const route of [ROUTE, '/%61pi/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token']) {
    t.equal((await post(app, route, body, { authorization: KEY_A })).body.statusCode, 200, route)
  }
  await post(app, ROUTE, { ...body, appId: APP_ID.replace('abcdef', 'ABCDEF') }, { authorization: KEY_B })
  await post(app, ROUTE, body, { authorization: 'x'.repeat(24) })
  const open = (await build(t, { upstream: url, env: { ...limits, REDIS_KEY_PREFIX: 'open' } })).app
  await post(open, ROUTE, body)

  const client = new Redis(redis.url)
  t.teardown(() => client.quit())
  const keys = (await client.keys('*ratelimit*')).sort()
  t.same(keys, [
    'open:ratelimit:app:wx0123456789abcdef',
    'open:ratelimit:caller:ip:127.0.0.1',
    'wxtoken:ratelimit:app:wx0123456789abcdef',
    'wxtoken:ratelimit:caller:key:billing',
    'wxtoken:ratelimit:caller:key:key2'
  ])
  t.equal(await client.get('wxtoken:ratelimit:caller:key:billing'), '3', 'every spelling counts against the caller')
  t.equal(await client.get('wxtoken:ratelimit:app:wx0123456789abcdef'), '4', 'an upper-case spelling counts against the same app; a refused caller is not counted')
})
