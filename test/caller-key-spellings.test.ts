import t, { type Test } from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, CALLER_KEYS, build, post, startMock, type Envelope } from './helpers/build.js'
import { envelopeOf, exchange, listen, rawPost } from './helpers/raw-http.js'

const ROUTES = ['/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token', '/api/v3/refresh-wechat-access-token']
const KEY = CALLER_KEYS[0]!
const body = { appId: APP_ID, appSecret: APP_SECRET, accessToken: 'reported-token-that-was-never-issued' }

/** Ways to write a route's path that a router may decode or normalize before it matches, or that a proxy may pass on. */
function spellings (route: string): string[] {
  const rest = route.slice('/api'.length)
  return [
    route,
    `/%61pi${rest}`,
    `/%61%70%69${rest}`,
    route.replace('-', '%2D'),
    route.replace('-', '%2d'),
    `${route.slice(0, 8)}%${route.charCodeAt(8).toString(16)}${route.slice(9)}`,
    `/%2561pi${rest}`,
    `/api%2Fv3${rest.slice('/v3'.length)}`,
    `http://x${route}`,
    `http://localhost:80${route}`,
    `HTTP://X${route}`,
    `/API${rest}`,
    route.toUpperCase(),
    `/x/..${route}`,
    `/./api${rest}`,
    `/api/./v3${rest.slice('/v3'.length)}`,
    `/api/v3/../v3${rest.slice('/v3'.length)}`,
    `/api/v3/%2e%2e/v3${rest.slice('/v3'.length)}`,
    `${route};`,
    `${route};x=1`,
    `/api;x=1${rest}`,
    `/${route}`,
    route.replace('/v3/', '/v3//'),
    `${route}?`,
    `${route}?a=1`,
    `${route}?authorization=${KEY}`,
    `${route}#x`,
    `${route}/`,
    `${route}//`,
    `${route}%00`,
    `${route}%20`,
    `${route}%2F`
  ]
}

/** The answer must be the 404 envelope (no route) or the 401 envelope (apiCode 2003); never a token. */
function checkRefused (t: Test, what: string, status: number, envelope: Envelope) {
  t.notOk(envelope.data, `${what}: no token`)
  if (status === 404) {
    t.equal(envelope.apiCode, ApiCodes.ROUTE_NOT_FOUND.apiCode, `${what}: 404 envelope`)
  } else {
    t.equal(status, 200, `${what}: a matched route answers HTTP 200`)
    t.equal(envelope.statusCode, 401, `${what}: refused`)
    t.equal(envelope.apiCode, ApiCodes.UNAUTHORIZED.apiCode, `${what}: apiCode 2003`)
  }
  t.type(envelope.requestId, 'string', `${what}: requestId`)
}

t.test('no spelling of a token route reaches it without a caller key: over a socket', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { AUTH_TOKENS: `billing=${KEY}` } })
  const port = await listen(app)
  for (const route of ROUTES) {
    for (const target of spellings(route)) {
      for (const headers of [{}, { authorization: 'x'.repeat(24) }] as Array<Record<string, string>>) {
        const res = await exchange(port, rawPost(target, body, { connection: 'close', ...headers }))
        const what = `${target}${'authorization' in headers ? ' (wrong key)' : ''}`
        checkRefused(t, what, res?.status ?? 0, envelopeOf(res))
      }
    }
  }
  t.equal(mock.calls('stable_token'), 0, 'nothing reached WeChat')
})

t.test('no spelling of a token route reaches it without a caller key: through inject', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { AUTH_TOKENS: `billing=${KEY}` } })
  for (const route of ROUTES) {
    for (const target of spellings(route)) {
      const { res, body: envelope } = await post(app, target, body)
      checkRefused(t, target, res.statusCode, envelope)
    }
  }
  t.equal(mock.calls('stable_token'), 0, 'nothing reached WeChat')
})

t.test('with a valid key the routes answer, and metrics and health stay open', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { AUTH_TOKENS: `billing=${KEY}` } })
  const port = await listen(app)
  const first = await exchange(port, rawPost(ROUTES[0]!, body, { authorization: KEY, connection: 'close' }))
  const token = envelopeOf(first).data?.accessToken
  t.type(token, 'string', 'the current route answers a token over a socket')
  const obsolete = await post(app, ROUTES[1]!, body, { authorization: `Bearer ${KEY}` })
  t.equal(obsolete.body.data?.accessToken, token, 'the obsolete route answers the same token')
  const refreshed = await post(app, ROUTES[2]!, { ...body, accessToken: token }, { authorization: KEY })
  t.equal(refreshed.body.statusCode, 200, 'the refresh route answers')
  t.not(refreshed.body.data?.accessToken, token, 'with a new token')
  for (const path of ['/metrics', '/health/live', '/health/ready']) {
    const res = await app.inject({ method: 'GET', url: path })
    t.equal(res.statusCode, 200, `${path} needs no key`)
  }
})
