import t from 'tap'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'

const ROUTES = ['/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token', '/api/v3/refresh-wechat-access-token']
const APPID = /^wx[0-9a-fA-F]{16}$/
const KNOWN_API_CODES = new Set(Object.values(ApiCodes).map((c) => c.apiCode))

/** Field values: the right shape, near misses, wrong types, huge and hostile strings. */
const field = fc.oneof(
  fc.constant(APP_ID), fc.constant(APP_SECRET), fc.constant('wx' + 'g'.repeat(16)), fc.constant('WX0123456789ABCDEF'),
  fc.stringMatching(/^wx[0-9a-f]{16}$/), fc.stringMatching(/^[0-9a-f]{32}$/),
  fc.string(), fc.string({ unit: 'binary', maxLength: 64 }), fc.constant('x'.repeat(5000)),
  fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 })
)

const objectBody = fc.record({
  appId: field, appSecret: field, accessToken: field, extra: fc.option(fc.jsonValue({ maxDepth: 4 }))
}, { requiredKeys: [] }).map((o) => JSON.stringify(o))

/** Raw payloads: JSON of any shape, prototype-pollution keys, deep nesting, broken JSON, invalid UTF-8, emptiness. */
const payload = fc.oneof(
  objectBody,
  fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v)),
  fc.constantFrom(
    `{"__proto__":{"polluted":1},"appId":"${APP_ID}","appSecret":"${APP_SECRET}"}`,
    `{"constructor":{"prototype":{"polluted":1}},"appId":"${APP_ID}","appSecret":"${APP_SECRET}"}`,
    '[]', '""', 'null', '{}', '', ' ', '{', '{"appId":', '\u0000', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'
  ),
  fc.integer({ min: 1, max: 2000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 1, max: 500 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
  fc.constant('y'.repeat(20000))
)

const contentType = fc.option(fc.constantFrom(
  'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'APPLICATION/JSON',
  'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/*', '*/*', 'garbage'
), { nil: undefined })

const headerValue = fc.stringMatching(/^[\x21-\x7e]{0,200}$/)
const headers = fc.dictionary(
  fc.constantFrom('x-authing-app-id', 'x-genauth-app-id', 'x-authing-userpool-id', 'x-request-id', 'authorization',
    'x-authing-request-from', 'x-genauth-sdk-version', 'accept', 'x-forwarded-for', 'content-encoding'),
  headerValue, { maxKeys: 5 }
)

const method = fc.constantFrom('POST', 'POST', 'POST', 'GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD')
const url = fc.oneof(fc.constantFrom(...ROUTES), fc.constantFrom('/health/live', '/health/ready', '/', '/api/v3/', '/api/v3/get-wechat-access-token-info?x=1'),
  fc.webPath().map((p) => (p.startsWith('/') ? p : '/' + p)))

async function check (app: FastifyInstance, request: { method: string, url: string, payload: string | Buffer, contentType: string | undefined, headers: Record<string, string> }) {
  const res = await app.inject({
    method: request.method as 'POST',
    url: request.url,
    headers: { ...request.headers, ...(request.contentType ? { 'content-type': request.contentType } : {}) },
    ...(request.method === 'GET' || request.method === 'HEAD' ? {} : { payload: request.payload })
  })
  if (res.statusCode >= 500 && !(request.url.startsWith('/health/ready') && res.statusCode === 503)) {
    throw new Error(`HTTP ${res.statusCode} for ${request.method} ${request.url}: ${res.body.slice(0, 200)}`)
  }
  if (request.method === 'HEAD' || request.url.startsWith('/health/')) return
  const envelope = res.json() as { statusCode: number, apiCode?: number, requestId: string, message: string }
  if (typeof envelope.statusCode !== 'number' || typeof envelope.message !== 'string' || typeof envelope.requestId !== 'string') {
    throw new Error(`not an envelope: ${res.body.slice(0, 200)}`)
  }
  if (envelope.statusCode >= 500) throw new Error(`envelope ${envelope.statusCode} (${envelope.message})`)
  if (envelope.statusCode !== 200 && !KNOWN_API_CODES.has(envelope.apiCode ?? -1)) throw new Error(`undocumented apiCode ${envelope.apiCode}`)
}

t.test('thousands of generated requests: never a 5xx, always an envelope, never an invalid appId upstream', async (t) => {
  const { mock, url: upstream } = await startMock(t, { autoRegister: true })
  const { app } = await build(t, { upstream, env: { LOG_LEVEL: 'warn' } })
  const request = fc.record({ method, url, payload, contentType, headers })
  await fc.assert(fc.asyncProperty(request, async (r) => { await check(app, r) }), { numRuns: 3000 })
  await fc.assert(fc.asyncProperty(fc.record({
    method: fc.constant('POST'), url: fc.constantFrom(...ROUTES), payload: objectBody, contentType: fc.constant('application/json'), headers
  }), async (r) => { await check(app, r) }), { numRuns: 2000 })

  const seen = mock.seenAppIds()
  t.ok(seen.length > 0, `the valid requests did reach WeChat (${seen.length} appIds)`)
  t.same(seen.filter((id) => !APPID.test(id)), [], 'no malformed appId ever reached WeChat')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
  const live = await app.inject({ method: 'GET', url: '/health/live' })
  t.equal(live.statusCode, 200, 'the service still answers')
})

t.test('generated decrypt requests: never a 5xx, always a documented apiCode, and only well-formed ones spend a code', async (t) => {
  const { mock, url: upstream } = await startMock(t)
  const { app } = await build(t, {
    upstream,
    env: { LOG_LEVEL: 'warn', WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), WECHAT_IDENTIFIERS: '{"mp":"wx0123456789abcdef"}', SCHEDULER_INTERVAL_SECONDS: '0' }
  })
  const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64')
  const near = fc.oneof(field, fc.uint8Array({ maxLength: 80 }).map(b64), fc.stringMatching(/^[A-Za-z0-9+/=]{0,40}$/))
  const body = fc.record({
    code: fc.oneof(fc.stringMatching(/^[a-z0-9]{32}$/), near),
    iv: fc.oneof(fc.uint8Array({ minLength: 16, maxLength: 16 }).map(b64), near),
    encryptedData: fc.oneof(fc.integer({ min: 1, max: 4 }).chain((n) => fc.uint8Array({ minLength: 16 * n, maxLength: 16 * n })).map(b64), near),
    extIdpConnidentifier: fc.oneof(fc.constant('mp'), near)
  }, { requiredKeys: [] })
  let wellFormed = 0
  await fc.assert(fc.asyncProperty(body, headers, async (b, h) => {
    const iv = typeof b.iv === 'string' ? Buffer.from(b.iv, 'base64') : undefined
    const data = typeof b.encryptedData === 'string' ? Buffer.from(b.encryptedData, 'base64') : undefined
    const shaped = typeof b.code === 'string' && /^[\x21-\x7e]{1,512}$/.test(b.code) && b.extIdpConnidentifier === 'mp' &&
      iv?.length === 16 && iv.toString('base64').replace(/=+$/, '') === (b.iv as string).replace(/=+$/, '') &&
      data !== undefined && data.length > 0 && data.length % 16 === 0 && data.toString('base64').replace(/=+$/, '') === (b.encryptedData as string).replace(/=+$/, '')
    const before = mock.calls('jscode2session')
    await check(app, { method: 'POST', url: '/api/v3/decrypt-wechat-miniprogram-data', payload: JSON.stringify(b), contentType: 'application/json', headers: h })
    const sent = mock.calls('jscode2session') - before
    if (shaped) wellFormed++
    if (sent > (shaped ? 1 : 0)) throw new Error(`${sent} jscode2session calls for ${shaped ? 'a well-formed' : 'an ill-formed'} body`)
  }), { numRuns: 1500 })
  t.ok(wellFormed > 0 && mock.calls('jscode2session') > 0, `well-formed bodies reached WeChat (${wellFormed} of them)`)
})
