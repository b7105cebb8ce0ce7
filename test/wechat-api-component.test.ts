/**
 * The Open Platform's component endpoints in WeChat's own shapes (WECHAT_COMPAT_API with WECHAT_COMPONENTS):
 * api_component_token answered from the cache for a caller that proves the component's secret, and
 * api_create_preauthcode for a component token handed out there; a herd of callers (node-easywechat's OpenPlatform
 * among them) costs WeChat one api_component_token call.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { OpenPlatform } from 'node-easywechat'
import { APP_ID, APP_SECRET, CALLER_KEYS, COMPONENT, OTHER_SECRET, build, post, startOpenPlatformMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import { MemoryCache } from './helpers/open-platform.js'
import type { MockComponent, MockOpenPlatform } from '../src/stand-in/open-platform.js'

const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
/** A second component, for a token of one used with the other's appId. */
const OTHER: MockComponent = { ...COMPONENT, appId: 'wxd1d1d1d1d1d1d1d1', appSecret: 'd1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1' }
const on = {
  WECHAT_COMPAT_API: 'true',
  WECHAT_COMPONENTS: JSON.stringify([COMPONENT]),
  AUTH_TOKENS: CALLER_KEYS.join(','),
  SCHEDULER_INTERVAL_SECONDS: '0'
}
const TOKEN_PATH = '/cgi-bin/component/api_component_token'
const PRE_AUTH_PATH = '/cgi-bin/component/api_create_preauthcode'

/** What a WeChat SDK sends: the component's appid and secret, and a verify ticket of its own (not read here). */
const tokenBody = (component: MockComponent = COMPONENT, secret = component.appSecret) =>
  ({ component_appid: component.appId, component_appsecret: secret, component_verify_ticket: 'ticket@@@the-sdk-s-own-copy' })

async function call (app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = auth) {
  const res = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) })
  return { res, body: res.json() as Record<string, unknown> }
}

const bases = new WeakMap<FastifyInstance, string>()
/** The base URL of an instance, listening from its first use. */
async function baseOf (app: FastifyInstance): Promise<string> {
  const known = bases.get(app)
  if (known !== undefined) return known
  const base = `http://127.0.0.1:${await listen(app)}`
  bases.set(app, base)
  return base
}

/** Tells the stand-in the service's callback for the component. */
async function setCallback (app: FastifyInstance, platform: MockOpenPlatform, component: MockComponent = COMPONENT): Promise<void> {
  platform.setCallback(component.appId, `${await baseOf(app)}/wechat/components/${component.appId}/events`)
}

/** The service's callback told to the stand-in, and a ticket pushed to it: whether the callback took it. */
async function pushTicket (app: FastifyInstance, platform: MockOpenPlatform, component: MockComponent = COMPONENT): Promise<boolean> {
  await setCallback(app, platform, component)
  return await platform.pushTicket(component.appId)
}

t.test('a herd of callers over 3 instances gets the cached component token; WeChat sees one api_component_token call', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps, instances } = await fleet(t, 3, url, on)
  t.ok(await pushTicket(apps[0]!, platform), 'the callback took the ticket')
  const answers = await Promise.all(Array.from({ length: 60 }, async (_, i) => await call(apps[i % 3]!, TOKEN_PATH, tokenBody())))
  t.ok(answers.every((a) => a.res.statusCode === 200), 'HTTP 200')
  t.same(Object.keys(answers[0]!.body).sort(), ['component_access_token', 'expires_in'], `exactly WeChat's fields: ${JSON.stringify(answers[0]!.body)}`)
  const tokens = new Set(answers.map((a) => a.body.component_access_token))
  t.equal(tokens.size, 1, 'one token for every caller')
  const token = String([...tokens][0])
  t.equal(platform.checkComponentToken(token), 'valid', 'WeChat\'s current component token')
  t.ok(answers.every((a) => Number(a.body.expires_in) > 7000 && Number(a.body.expires_in) <= 7200), 'its seconds left')
  t.equal(platform.calls('api_component_token', COMPONENT.appId), 1, 'one upstream call for 60 callers on 3 instances')
  t.notOk(platform.issuedTickets().includes('ticket@@@the-sdk-s-own-copy'), 'the ticket the callers sent was not WeChat\'s')
  const genauth = await post(apps[1]!, '/api/v3/get-component-access-token', { componentAppId: COMPONENT.appId }, auth)
  t.equal(genauth.body.data?.accessToken, token, 'the token of the GenAuth-shaped route too')
  const lines = instances.flatMap((i) => i.logs.lines).join('\n')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'no secret, ticket or token in the log')
  const metrics = (await apps[0]!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_requests_total\{route="\/cgi-bin\/component\/api_component_token",status_code="200"\} \d+/, 'counted under its route')
})

t.test('node-easywechat\'s OpenPlatform, pointed at the service: the cached token and a pre-auth code, one upstream token call', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, on)
  t.ok(await pushTicket(apps[0]!, platform), 'the callback took the ticket')
  const urls = await Promise.all(apps.map(baseOf))
  const sdk = async (i: number): Promise<OpenPlatform> => {
    const open = new OpenPlatform({
      app_id: COMPONENT.appId,
      secret: COMPONENT.appSecret,
      token: COMPONENT.token,
      aes_key: COMPONENT.encodingAESKey,
      http: { baseURL: urls[i % urls.length]!, headers: { authorization: `Bearer ${KEY}` } }
    })
    open.setCache(new MemoryCache())
    // It will not call api_component_token without a ticket in its own cache: any placeholder does, none is read.
    await open.getVerifyTicket().setTicket('placeholder, not read by the service')
    return open
  }
  const tokens = await Promise.all(Array.from({ length: 20 }, async (_, i) => await (await sdk(i)).getComponentAccessToken().getToken()))
  t.equal(new Set(tokens).size, 1, 'one token for every SDK instance')
  t.equal(platform.checkComponentToken(tokens[0]!), 'valid')
  t.equal(platform.calls('api_component_token'), 1, 'one upstream call')
  const open = await sdk(1)
  const code = await open.createPreAuthorizationCode() as { pre_auth_code?: string, expires_in?: number }
  t.ok(code.pre_auth_code !== undefined && platform.issuedPreAuthCodes().includes(code.pre_auth_code), `WeChat's pre-auth code: ${JSON.stringify(code)}`)
  t.equal(platform.calls('api_component_token'), 1, 'still one upstream token call')
  t.equal(platform.calls('api_create_preauthcode'), 1)
})

t.test('a wrong secret, an unknown component, a malformed body: WeChat\'s errcodes, no upstream call, no secret in the log', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app, logs } = await build(t, { upstream: url, env: on })
  t.ok(await pushTicket(app, platform), 'the callback took the ticket')
  const right = await call(app, TOKEN_PATH, tokenBody())
  t.type(right.body.component_access_token, 'string', 'the right secret is served (the token is cached from here on)')
  t.equal(platform.calls('api_component_token'), 1)
  const cases: Array<[string, unknown, number]> = [
    ['wrong secret', tokenBody(COMPONENT, OTHER_SECRET), 40125],
    ['malformed secret', tokenBody(COMPONENT, 'not-a-secret'), 40125],
    ['no secret', { component_appid: COMPONENT.appId, component_verify_ticket: 'x' }, 41004],
    ['unknown component', tokenBody(OTHER), 40013],
    ['malformed appid', { ...tokenBody(), component_appid: 'wx12' }, 40013],
    ['no appid', { component_appsecret: COMPONENT.appSecret }, 41002],
    ['the app\'s own secret for the component', tokenBody(COMPONENT, APP_SECRET), 40125]
  ]
  for (const [name, body, errcode] of cases) {
    const answer = await call(app, TOKEN_PATH, body)
    t.equal(answer.res.statusCode, 200, `${name}: HTTP 200, as WeChat answers`)
    t.same(Object.keys(answer.body).sort(), ['errcode', 'errmsg'], name)
    t.equal(answer.body.errcode, errcode, `${name}: ${String(answer.body.errmsg)}`)
    t.notOk(String(answer.body.errmsg).includes(OTHER_SECRET) || String(answer.body.errmsg).includes(COMPONENT.appSecret), 'no secret in errmsg')
  }
  const notJson = await app.inject({ method: 'POST', url: TOKEN_PATH, headers: { ...auth, 'content-type': 'application/json' }, payload: '{' })
  t.equal(notJson.json<{ errcode: number }>().errcode, 47001, 'a body that is not JSON')
  const keyless = await call(app, TOKEN_PATH, tokenBody(), {})
  t.equal(keyless.body.errcode, 40164, 'AUTH_TOKENS set and no caller key: WeChat\'s whitelist refusal, as on the other WeChat-shaped routes')
  t.notOk('component_access_token' in keyless.body)
  t.equal(platform.calls('api_component_token'), 1, 'WeChat was asked nothing more')
  const lines = logs.lines.join('\n')
  t.notOk(lines.includes(OTHER_SECRET), 'the wrong secret is in no log line')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'nor any secret, ticket or token')
})

t.test('with no ticket pushed yet: 61006 without asking WeChat for a token, a push asked for; then served', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  await setCallback(app, platform)
  const refused = await Promise.all(Array.from({ length: 10 }, async () => await call(app, TOKEN_PATH, tokenBody())))
  for (const answer of refused) {
    t.equal(answer.body.errcode, 61006, String(answer.body.errmsg))
    t.match(String(answer.body.errmsg), /apiCode 4009/, 'the errmsg names the apiCode')
  }
  t.equal(platform.calls('api_component_token'), 0, 'no token call without a ticket (the one the caller sent is not used)')
  t.ok(await until(() => platform.pushes(COMPONENT.appId).some((push) => push.accepted), 5000), 'WeChat was asked to push, and did')
  t.equal(platform.calls('api_start_push_ticket', COMPONENT.appId), 1, 'asked once')
  const served = await call(app, TOKEN_PATH, tokenBody())
  t.type(served.body.component_access_token, 'string', JSON.stringify(served.body))
  t.equal(platform.calls('api_component_token'), 1)
})

t.test('api_create_preauthcode: a new code for a component token handed out here for that component, else 40001', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t, [COMPONENT, OTHER])
  const { app, logs } = await build(t, {
    upstream: url,
    env: { ...on, WECHAT_COMPONENTS: JSON.stringify([COMPONENT, OTHER]), WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }) }
  })
  t.ok(await pushTicket(app, platform), 'the callback took the ticket')
  t.ok(await pushTicket(app, platform, OTHER), 'and the other component\'s')
  const token = String((await call(app, TOKEN_PATH, tokenBody())).body.component_access_token)
  const otherToken = String((await call(app, TOKEN_PATH, tokenBody(OTHER))).body.component_access_token)
  const codes: string[] = []
  for (let i = 0; i < 2; i++) {
    const answer = await call(app, `${PRE_AUTH_PATH}?component_access_token=${encodeURIComponent(token)}`, { component_appid: COMPONENT.appId })
    t.same(Object.keys(answer.body).sort(), ['expires_in', 'pre_auth_code'], JSON.stringify(answer.body))
    t.ok(Number(answer.body.expires_in) > 1700 && Number(answer.body.expires_in) <= 1800, 'its seconds left')
    codes.push(String(answer.body.pre_auth_code))
  }
  t.not(codes[0], codes[1], 'a new one at every call')
  t.ok(codes.every((code) => platform.issuedPreAuthCodes().includes(code)), 'WeChat\'s own codes')
  t.equal(platform.calls('api_create_preauthcode', COMPONENT.appId), 2)

  const officialToken = (await app.inject({ method: 'GET', url: `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`, headers: auth }))
    .json<{ access_token: string }>().access_token
  const genauthToken = (await post(app, '/api/v3/get-component-access-token', { componentAppId: COMPONENT.appId }, auth)).body.data?.accessToken
  t.equal(genauthToken, token, 'the GenAuth route serves the same token')
  const refused: Array<[string, string, unknown, number]> = [
    ['a token never handed out', '?component_access_token=12_not-one-of-ours', { component_appid: COMPONENT.appId }, 40001],
    ['another component\'s token', `?component_access_token=${encodeURIComponent(otherToken)}`, { component_appid: COMPONENT.appId }, 40001],
    ['an Official Account\'s token', `?component_access_token=${encodeURIComponent(officialToken)}`, { component_appid: COMPONENT.appId }, 40001],
    ['no token', '', { component_appid: COMPONENT.appId }, 41001],
    ['no component_appid', `?component_access_token=${encodeURIComponent(token)}`, {}, 41002],
    ['a component not configured', `?component_access_token=${encodeURIComponent(token)}`, { component_appid: 'wx0000000000000bad' }, 40013]
  ]
  for (const [name, query, body, errcode] of refused) {
    const answer = await call(app, `${PRE_AUTH_PATH}${query}`, body)
    t.equal(answer.res.statusCode, 200, name)
    t.equal(answer.body.errcode, errcode, `${name}: ${String(answer.body.errmsg)}`)
  }
  t.equal(platform.calls('api_create_preauthcode'), 2, 'WeChat was asked nothing for them')
  t.equal(platform.calls('api_component_token'), 2, 'one token call per component')
  const lines = logs.lines.join('\n')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'no token or code in the log')
})

t.test('without WECHAT_COMPONENTS the component paths are not WeChat-shaped routes', async (t) => {
  const { url } = await startOpenPlatformMock(t)
  const { WECHAT_COMPONENTS: _, ...without } = on
  const { app } = await build(t, { upstream: url, env: without })
  t.notOk(app.hasRoute({ method: 'POST', url: TOKEN_PATH }))
  t.notOk(app.hasRoute({ method: 'POST', url: PRE_AUTH_PATH }))
  const { app: withComponents } = await build(t, { upstream: url, env: on })
  t.ok(withComponents.hasRoute({ method: 'POST', url: TOKEN_PATH }))
  t.ok(withComponents.hasRoute({ method: 'POST', url: PRE_AUTH_PATH }))
})
