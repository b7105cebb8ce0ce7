/**
 * The Open Platform's authorizer endpoints in WeChat's own shapes (WECHAT_COMPAT_API with WECHAT_COMPONENTS):
 * api_authorizer_token answered with the cached authorizer token and the refresh token kept here (the caller's is not
 * read), and api_query_auth exchanged once whoever has the code first; both for a component token handed out here.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { OpenPlatform } from 'node-easywechat'
import { CALLER_KEYS, COMPONENT, TestClock, build, post, startOpenPlatformMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import { MemoryCache, authorizeAll, refreshTokenCount } from './helpers/open-platform.js'
import { authorizerSpace } from '../src/open-platform/refresh-tokens.js'
import { createHandedOut } from '../src/wechat-api/handed-out.js'
import type { MockComponent, MockOpenPlatform } from '../src/stand-in/open-platform.js'

const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
const OTHER: MockComponent = { ...COMPONENT, appId: 'wxd1d1d1d1d1d1d1d1', appSecret: 'd1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1' }
const on = {
  WECHAT_COMPAT_API: 'true',
  WECHAT_COMPONENTS: JSON.stringify([COMPONENT]),
  AUTH_TOKENS: CALLER_KEYS.join(','),
  SCHEDULER_INTERVAL_SECONDS: '0'
}
const C = COMPONENT.appId
const authorizer = (i: number): string => `wx${(0xa0000000 + i).toString(16).padStart(16, '0')}`
const A = authorizer(1)
const COMPONENT_TOKEN_PATH = '/cgi-bin/component/api_component_token'
const AUTHORIZER_TOKEN_PATH = '/cgi-bin/component/api_authorizer_token'
const QUERY_AUTH_PATH = '/cgi-bin/component/api_query_auth'
/** A refresh token no SDK should be able to get anything with: WeChat refuses it (61023). */
const WRONG_REFRESH_TOKEN = 'refreshtoken@@@an-old-copy-the-sdk-kept'

async function call (app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = auth) {
  const res = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) })
  return { res, body: res.json() as Record<string, unknown> }
}

const withToken = (path: string, token: string): string => `${path}?component_access_token=${encodeURIComponent(token)}`

/** A component token handed out on WeChat's own endpoint (the caller proves the component's secret). */
async function componentToken (app: FastifyInstance, component: MockComponent = COMPONENT): Promise<string> {
  const { body } = await call(app, COMPONENT_TOKEN_PATH, { component_appid: component.appId, component_appsecret: component.appSecret })
  if (typeof body.component_access_token !== 'string') throw new Error(`no component token: ${JSON.stringify(body)}`)
  return body.component_access_token
}

const bases = new WeakMap<FastifyInstance, string>()
async function baseOf (app: FastifyInstance): Promise<string> {
  const known = bases.get(app)
  if (known !== undefined) return known
  const base = `http://127.0.0.1:${await listen(app)}`
  bases.set(app, base)
  return base
}

/** The service's callback told to the stand-in, and a ticket pushed to it. */
async function pushTicket (app: FastifyInstance, platform: MockOpenPlatform, component: MockComponent = COMPONENT): Promise<boolean> {
  platform.setCallback(component.appId, `${await baseOf(app)}/wechat/components/${component.appId}/events`)
  return await platform.pushTicket(component.appId)
}

t.test('api_authorizer_token: a herd over 3 instances sending a wrong refresh token gets the cached token and the kept refresh token; one fetch', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const clock = new TestClock()
  const { apps, instances } = await fleet(t, 3, url, on, clock)
  t.ok(await pushTicket(apps[0]!, platform), 'the callback took the ticket')
  // (Pushes carry the wall clock's timestamp: the authorization is made before the service's clock moves.)
  t.ok(await authorizeAll(apps[0]!, platform, [A]), 'the refresh token was kept')
  const exchanged = platform.refreshTokenOf(C, A)
  // The token api_query_auth gave has expired: the herd needs a new one, and WeChat rotates the refresh token with it.
  clock.advance(7200_000)
  platform.rotateRefreshTokens(true)
  const token = await componentToken(apps[1]!)
  const body = { component_appid: C, authorizer_appid: A, authorizer_refresh_token: WRONG_REFRESH_TOKEN }
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => await call(apps[i % 3]!, withToken(AUTHORIZER_TOKEN_PATH, token), body)))
  t.ok(answers.every((a) => a.res.statusCode === 200), 'HTTP 200')
  t.same(Object.keys(answers[0]!.body).sort(), ['authorizer_access_token', 'authorizer_refresh_token', 'expires_in'], `exactly WeChat's fields: ${JSON.stringify(answers[0]!.body)}`)
  const tokens = new Set(answers.map((a) => a.body.authorizer_access_token))
  t.equal(tokens.size, 1, 'one token for every caller')
  const authorizerToken = String([...tokens][0])
  t.equal(platform.checkAuthorizerToken(authorizerToken), 'valid', 'WeChat\'s current authorizer token')
  t.same(platform.authorizerOf(authorizerToken), { componentAppId: C, authorizerAppId: A })
  t.equal(platform.calls('api_authorizer_token', C), 1, 'one upstream call for 30 callers on 3 instances (made with the kept refresh token: WeChat refuses the one sent)')
  t.ok(answers.every((a) => Number(a.body.expires_in) > 7000 && Number(a.body.expires_in) <= 7200), 'its seconds left')
  const current = platform.refreshTokenOf(C, A)
  t.not(current, exchanged, 'WeChat rotated the refresh token on that fetch')
  t.ok(answers.every((a) => a.body.authorizer_refresh_token === current), 'every caller is answered the refresh token kept here, the rotated one, not its own')
  const genauth = await post(apps[2]!, '/api/v3/get-authorizer-access-token', { componentAppId: C, authorizerAppId: A }, auth)
  t.equal(genauth.body.data?.accessToken, authorizerToken, 'the token of the GenAuth-shaped route too')
  const subject = await createHandedOut({ store: apps[2]!.store }).subjectOf(authorizerToken)
  t.equal(subject, apps[0]!.authorizerTokens.credential.subject(authorizerSpace(C, A)), 'remembered as handed out, for the authorizer')
  const lines = instances.flatMap((i) => i.logs.lines).join('\n')
  for (const secret of [...platform.secrets(), WRONG_REFRESH_TOKEN]) t.notOk(lines.includes(secret), 'no ticket, token or refresh token in the log')
  const metrics = (await apps[0]!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_requests_total\{route="\/cgi-bin\/component\/api_authorizer_token",status_code="200"\} \d+/, 'counted under its route')
})

t.test('api_query_auth: the code the authorized event exchanged is answered from that exchange; node-easywechat\'s OpenPlatform end to end', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, on)
  t.ok(await pushTicket(apps[0]!, platform), 'the callback took the ticket')
  const code = platform.authorize(C, A)
  // The event carries the same code as the redirect; the callback's instance exchanges it first.
  t.ok(await authorizeAll(apps[0]!, platform, [A]), 'the event\'s code was exchanged')
  t.equal(platform.calls('api_query_auth', C), 1)
  const open = new OpenPlatform({
    app_id: COMPONENT.appId,
    secret: COMPONENT.appSecret,
    token: COMPONENT.token,
    aes_key: COMPONENT.encodingAESKey,
    http: { baseURL: await baseOf(apps[1]!), headers: { authorization: `Bearer ${KEY}` } }
  })
  open.setCache(new MemoryCache())
  await open.getVerifyTicket().setTicket('placeholder, not read by the service')
  const authorization = await open.getAuthorization(code)
  t.equal(authorization.getAppId(), A, 'the authorizer')
  const first = await authorization.getAccessToken().getToken()
  t.equal(platform.checkAuthorizerToken(first), 'valid', 'the token the exchange gave')
  t.equal(authorization.getRefreshToken(), platform.refreshTokenOf(C, A), 'the refresh token kept here')
  t.equal(platform.calls('api_query_auth'), 1, 'the SDK\'s call was answered from the event\'s exchange: WeChat saw the code once')
  const refreshed = await open.refreshAuthorizerToken(A, WRONG_REFRESH_TOKEN) as Record<string, unknown>
  t.equal(refreshed.authorizer_access_token, first, 'refreshAuthorizerToken with a wrong refresh token: the cached token')
  t.equal(refreshed.authorizer_refresh_token, platform.refreshTokenOf(C, A), 'and the refresh token kept here')
  t.equal(await open.getAuthorizerAccessToken(A, WRONG_REFRESH_TOKEN), first, 'getAuthorizerAccessToken likewise')
  t.equal(platform.calls('api_authorizer_token'), 0, 'nothing fetched: the exchanged token is still current')
  t.equal(platform.calls('api_component_token'), 1, 'one component token for the event\'s exchange and the SDK')
})

t.test('api_query_auth: one code sent by callers on 2 instances at once is exchanged once; WeChat\'s shape', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, on)
  t.ok(await pushTicket(apps[0]!, platform), 'the callback took the ticket')
  const token = await componentToken(apps[0]!)
  const code = platform.authorize(C, A)
  const answers = await Promise.all(Array.from({ length: 6 }, async (_, i) =>
    await call(apps[i % 2]!, withToken(QUERY_AUTH_PATH, token), { component_appid: C, authorization_code: code })))
  t.same(Object.keys(answers[0]!.body), ['authorization_info'], JSON.stringify(answers[0]!.body))
  const infos = answers.map((a) => a.body.authorization_info as Record<string, unknown>)
  t.same(Object.keys(infos[0]!).sort(), ['authorizer_access_token', 'authorizer_appid', 'authorizer_refresh_token', 'expires_in', 'func_info'])
  t.ok(infos.every((info) => info.authorizer_appid === A), 'the authorizer')
  t.equal(new Set(infos.map((info) => info.authorizer_access_token)).size, 1, 'one token for all')
  t.equal(platform.checkAuthorizerToken(String(infos[0]!.authorizer_access_token)), 'valid')
  t.ok(infos.every((info) => info.authorizer_refresh_token === platform.refreshTokenOf(C, A)), 'WeChat\'s refresh token, kept here')
  t.ok(infos.every((info) => Array.isArray(info.func_info) && info.func_info.length === 0), 'func_info: [] (not kept)')
  t.ok(infos.every((info) => Number(info.expires_in) > 7000 && Number(info.expires_in) <= 7200))
  t.equal(platform.calls('api_query_auth'), 1, 'one exchange for six callers on two instances')
  const subject = await createHandedOut({ store: apps[1]!.store }).subjectOf(String(infos[0]!.authorizer_access_token))
  t.equal(subject, apps[1]!.authorizerTokens.credential.subject(authorizerSpace(C, A)), 'remembered as handed out, for the authorizer')
  const served = await call(apps[1]!, withToken(AUTHORIZER_TOKEN_PATH, token), { component_appid: C, authorizer_appid: A, authorizer_refresh_token: WRONG_REFRESH_TOKEN })
  t.equal(served.body.authorizer_access_token, infos[0]!.authorizer_access_token, 'api_authorizer_token answers the exchanged token')
  t.equal(platform.calls('api_authorizer_token'), 0)
})

t.test('refusals: unknown component token 40001, not authorized 61003, a code WeChat refuses 61009; no upstream call for them', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t, [COMPONENT, OTHER])
  const { app, logs } = await build(t, { upstream: url, env: { ...on, WECHAT_COMPONENTS: JSON.stringify([COMPONENT, OTHER]), HOT_CACHE_MS: '0' } })
  t.ok(await pushTicket(app, platform), 'the callback took the ticket')
  t.ok(await pushTicket(app, platform, OTHER), 'and the other component\'s')
  t.ok(await authorizeAll(app, platform, [A]))
  const token = await componentToken(app)
  const otherToken = await componentToken(app, OTHER)
  const right = await call(app, withToken(AUTHORIZER_TOKEN_PATH, token), { component_appid: C, authorizer_appid: A, authorizer_refresh_token: WRONG_REFRESH_TOKEN })
  t.type(right.body.authorizer_access_token, 'string', JSON.stringify(right.body))
  const lists = platform.calls('api_get_authorizer_list')

  const authorizerBody = (authorizerAppId: string = A) => ({ component_appid: C, authorizer_appid: authorizerAppId, authorizer_refresh_token: WRONG_REFRESH_TOKEN })
  const cases: Array<[string, string, unknown, number]> = [
    ['a token never handed out', withToken(AUTHORIZER_TOKEN_PATH, '12_not-one-of-ours'), authorizerBody(), 40001],
    ['another component\'s token', withToken(AUTHORIZER_TOKEN_PATH, otherToken), authorizerBody(), 40001],
    ['the authorizer\'s own token as the component\'s', withToken(AUTHORIZER_TOKEN_PATH, String(right.body.authorizer_access_token)), authorizerBody(), 40001],
    ['no token', AUTHORIZER_TOKEN_PATH, authorizerBody(), 41001],
    ['a component not configured', withToken(AUTHORIZER_TOKEN_PATH, token), { ...authorizerBody(), component_appid: 'wx0000000000000bad' }, 40013],
    ['no authorizer_appid', withToken(AUTHORIZER_TOKEN_PATH, token), { component_appid: C }, 41002],
    ['a malformed authorizer_appid', withToken(AUTHORIZER_TOKEN_PATH, token), authorizerBody('wx12'), 40013],
    ['query_auth with a token never handed out', withToken(QUERY_AUTH_PATH, '12_not-one-of-ours'), { component_appid: C, authorization_code: 'queryauthcode@@@x' }, 40001],
    ['query_auth without a code', withToken(QUERY_AUTH_PATH, token), { component_appid: C }, 41008],
    ['query_auth with a malformed code', withToken(QUERY_AUTH_PATH, token), { component_appid: C, authorization_code: 'bad code with spaces' }, 61009]
  ]
  for (const [name, path, body, errcode] of cases) {
    const answer = await call(app, path, body)
    t.equal(answer.res.statusCode, 200, `${name}: HTTP 200, as WeChat answers`)
    t.same(Object.keys(answer.body).sort(), ['errcode', 'errmsg'], name)
    t.equal(answer.body.errcode, errcode, `${name}: ${String(answer.body.errmsg)}`)
  }
  t.equal(platform.calls('api_authorizer_token'), 0, 'WeChat was asked for no authorizer token')
  t.equal(platform.calls('api_query_auth'), 1, 'nor to exchange a code (the one call is the event\'s)')

  const stranger = await call(app, withToken(AUTHORIZER_TOKEN_PATH, token), authorizerBody(authorizer(999)))
  t.equal(stranger.body.errcode, 61003, `an account that never authorized: ${String(stranger.body.errmsg)}`)
  t.match(String(stranger.body.errmsg), /apiCode 4010/, 'the errmsg names the apiCode')
  t.equal(platform.calls('api_get_authorizer_list'), lists + 1, 'WeChat\'s list was read for it, once')
  t.equal(await platform.unauthorize(C, A), true, 'the authorization ended')
  t.ok(await until(async () => await refreshTokenCount(app, 'removed') === 1), 'its refresh token was removed')
  const ended = await call(app, withToken(AUTHORIZER_TOKEN_PATH, token), authorizerBody())
  t.equal(ended.body.errcode, 61003, `an authorization that ended: ${String(ended.body.errmsg)}`)
  t.notOk('authorizer_access_token' in ended.body)
  t.equal(platform.calls('api_authorizer_token'), 0, 'still no authorizer token asked of WeChat')

  const refused = await call(app, withToken(QUERY_AUTH_PATH, token), { component_appid: C, authorization_code: 'queryauthcode@@@not-one-wechat-gave' })
  t.equal(refused.body.errcode, 61009, `WeChat's own errcode for a code it refuses: ${String(refused.body.errmsg)}`)
  t.match(String(refused.body.errmsg), /apiCode 3018/)
  t.notOk(String(refused.body.errmsg).includes('not-one-wechat-gave'), 'the code is not repeated')
  const lines = logs.lines.join('\n')
  for (const secret of [...platform.secrets(), WRONG_REFRESH_TOKEN]) t.notOk(lines.includes(secret), 'no ticket, token or refresh token in the log')
})

t.test('the pass-through never fetches an authorizer token or exchanges a code past the cache; without WECHAT_COMPONENTS no routes', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_PASSTHROUGH: 'true' } })
  for (const [method, path] of [
    ['GET', '/cgi-bin/component/api_authorizer_token'],
    ['POST', '/cgi-bin/component/API_AUTHORIZER_TOKEN'],
    ['GET', '/cgi-bin/component/api_query_auth'],
    ['POST', '/cgi-bin/component/Api_Query_Auth']
  ] as const) {
    const res = await app.inject({ method, url: `${path}?component_access_token=x`, headers: { ...auth, 'content-type': 'application/json' }, payload: method === 'POST' ? '{}' : undefined })
    t.equal(res.json<{ errcode: number }>().errcode, 48001, `${method} ${path}: refused`)
  }
  t.equal(platform.calls('api_authorizer_token') + platform.calls('api_query_auth'), 0, 'nothing reached WeChat')
  const { WECHAT_COMPONENTS: _, ...without } = on
  const { app: plain } = await build(t, { upstream: url, env: without })
  t.notOk(plain.hasRoute({ method: 'POST', url: AUTHORIZER_TOKEN_PATH }))
  t.notOk(plain.hasRoute({ method: 'POST', url: QUERY_AUTH_PATH }))
  t.ok(app.hasRoute({ method: 'POST', url: AUTHORIZER_TOKEN_PATH }))
  t.ok(app.hasRoute({ method: 'POST', url: QUERY_AUTH_PATH }))
})

t.test('getticket with an authorizer token handed out here answers the authorizer\'s ticket, fetched once', async (t) => {
  const { mock, platform, url } = await startOpenPlatformMock(t)
  const { app, logs } = await build(t, { upstream: url, env: on })
  t.ok(await pushTicket(app, platform))
  t.ok(await authorizeAll(app, platform, [A]))
  const ct = await componentToken(app)
  const { body } = await call(app, withToken(AUTHORIZER_TOKEN_PATH, ct), { component_appid: C, authorizer_appid: A, authorizer_refresh_token: WRONG_REFRESH_TOKEN })
  const token = body.authorizer_access_token as string
  t.type(token, 'string', JSON.stringify(body))
  const answers = await Promise.all(Array.from({ length: 10 }, async () =>
    (await app.inject({ method: 'GET', url: `/cgi-bin/ticket/getticket?access_token=${encodeURIComponent(token)}&type=jsapi`, headers: auth })).json() as Record<string, unknown>))
  t.ok(answers.every((a) => a.errcode === 0 && typeof a.ticket === 'string'), JSON.stringify(answers[0]))
  t.equal(new Set(answers.map((a) => a.ticket)).size, 1)
  t.equal(mock.calls('getticket'), 1, 'one getticket, made with the authorizer\'s token')
  const genauth = await post(app, '/api/v3/get-authorizer-jsapi-ticket', { componentAppId: C, authorizerAppId: A }, auth)
  t.equal((genauth.body.data as { ticket?: string } | undefined)?.ticket, answers[0]!.ticket, 'the same ticket the GenAuth route answers')
  const stranger = (await app.inject({ method: 'GET', url: '/cgi-bin/ticket/getticket?access_token=not-handed-out&type=jsapi', headers: auth })).json() as Record<string, unknown>
  t.equal(stranger.errcode, 40001, 'a token not handed out here is refused as before')
  const lines = logs.lines.join('\n')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'no token, ticket or refresh token in the log')
})
