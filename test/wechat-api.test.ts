/** WeChat's own token endpoints (WECHAT_COMPAT_API): WeChat's shapes, from the cache, with the GenAuth routes' guarantees. */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, CALLER_KEYS, CORP_ID, OTHER_SECRET, build, post, startMock, startWecomMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const on = { WECHAT_COMPAT_API: 'true', SCHEDULER_INTERVAL_SECONDS: '0' }
const configured = JSON.stringify({ [APP_ID]: APP_SECRET })

async function get (app: FastifyInstance, path: string, query: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'GET', url: `${path}?${new URLSearchParams(query).toString()}`, headers })
  return { res, body: res.json() as Record<string, unknown> }
}

const tokenQuery = (secret = APP_SECRET, appid = APP_ID) => ({ grant_type: 'client_credential', appid, secret })

t.test('GET /cgi-bin/token answers WeChat\'s shape from the cache: the token the GenAuth route serves', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const first = await get(app, '/cgi-bin/token', tokenQuery())
  t.equal(first.res.statusCode, 200)
  t.match(first.res.headers['content-type'], /^application\/json/)
  t.same(Object.keys(first.body).sort(), ['access_token', 'expires_in'], 'exactly WeChat\'s fields')
  t.type(first.body.access_token, 'string')
  t.ok(Number(first.body.expires_in) > 7000 && Number(first.body.expires_in) <= 7200, `expires_in ${String(first.body.expires_in)}`)
  const genauth = await post(app, '/api/v3/get-wechat-access-token-info', { appId: APP_ID, appSecret: APP_SECRET })
  t.equal(genauth.body.data?.accessToken, first.body.access_token, 'one token for both shapes')
  const again = await get(app, '/cgi-bin/token', tokenQuery())
  t.equal(again.body.access_token, first.body.access_token)
  t.equal(mock.calls('stable_token', APP_ID), 1, 'fetched once')
  t.equal(mock.check(String(first.body.access_token)), 'valid')
})

t.test('refusals are WeChat\'s {errcode, errmsg} with HTTP 200, and ask WeChat nothing', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const cases: Array<[string, Record<string, string>, number]> = [
    ['wrong secret', tokenQuery(OTHER_SECRET), 40125],
    ['another app', tokenQuery(APP_SECRET, 'wx00000000000000ff'), 40013],
    ['no appid', { grant_type: 'client_credential', secret: APP_SECRET }, 41002],
    ['no secret', { grant_type: 'client_credential', appid: APP_ID }, 41004],
    ['malformed appid', tokenQuery(APP_SECRET, 'wx0123'), 40013],
    ['malformed secret', tokenQuery('xyz'), 40125],
    ['another grant_type', { ...tokenQuery(), grant_type: 'authorization_code' }, 40002],
    ['no grant_type', { appid: APP_ID, secret: APP_SECRET }, 40002]
  ]
  for (const [name, query, errcode] of cases) {
    const { res, body } = await get(app, '/cgi-bin/token', query)
    t.equal(res.statusCode, 200, name)
    t.same(Object.keys(body).sort(), ['errcode', 'errmsg'], name)
    t.equal(body.errcode, errcode, `${name}: ${String(body.errmsg)}`)
    t.notOk(String(body.errmsg).includes(OTHER_SECRET), 'no secret in errmsg')
  }
  t.equal(mock.calls('stable_token'), 0, 'WeChat was asked nothing')
})

t.test('off by default: WeChat\'s paths are not served', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { SCHEDULER_INTERVAL_SECONDS: '0' } })
  const { res } = await get(app, '/cgi-bin/token', tokenQuery())
  t.equal(res.statusCode, 404)
})

t.test('WeChat\'s own refusal keeps its errcode; a failing WeChat is "system error", which SDKs retry', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_MAX_RETRIES: '0' } })
  mock.inject({ fault: { kind: 'errcode', errcode: 40164 }, times: 1 })
  const refused = await get(app, '/cgi-bin/token', tokenQuery())
  t.equal(refused.body.errcode, 40164, String(refused.body.errmsg))
  t.notOk(/from ip|\d+\.\d+\.\d+\.\d+/.test(String(refused.body.errmsg)), 'WeChat\'s errmsg (with the caller\'s IP) is not passed on')
  const { app: other } = await build(t, { upstream: url, env: { ...on, WECHAT_MAX_RETRIES: '0' } })
  mock.inject({ fault: { kind: 'http', status: 502 } })
  const failed = await get(other, '/cgi-bin/token', tokenQuery())
  t.equal(failed.body.errcode, -1, String(failed.body.errmsg))
  const backedOff = await get(other, '/cgi-bin/token', tokenQuery())
  t.equal(backedOff.body.errcode, -1, String(backedOff.body.errmsg))
  t.ok(backedOff.res.headers['retry-after'], 'with retry-after while backed off')
})

t.test('a refusal of WeChat\'s remembered (not asked again) keeps WeChat\'s errcode, not "system error", which SDKs retry', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  // Dynamic mode: WeChat checks the secret, and its refusal is remembered for that secret.
  for (let i = 0; i < 3; i++) {
    const { body } = await get(app, '/cgi-bin/token', tokenQuery(OTHER_SECRET))
    t.equal(body.errcode, 40125, `wrong secret, call ${i + 1}: ${String(body.errmsg)}`)
  }
  // WeChat refusing the service's IP: remembered for the app.
  mock.inject({ fault: { kind: 'errcode', errcode: 40164 }, times: 1 })
  for (let i = 0; i < 2; i++) {
    const { body } = await get(app, '/cgi-bin/token', tokenQuery())
    t.equal(body.errcode, 40164, `IP refused, call ${i + 1}: ${String(body.errmsg)}`)
  }
  t.equal(mock.calls('stable_token'), 2, 'the remembered refusals asked WeChat nothing')
})

t.test('the daily budget is WeChat\'s 45009, which SDKs do not retry', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured, DAILY_UPSTREAM_BUDGET: '1', HOT_CACHE_MS: '0' } })
  t.type((await get(app, '/cgi-bin/token', tokenQuery())).body.access_token, 'string')
  await app.store.delete(APP_ID, 'token')
  const refused = await get(app, '/cgi-bin/token', tokenQuery())
  t.equal(refused.body.errcode, 45009, JSON.stringify(refused.body))
  t.equal(mock.calls('stable_token'), 1)
})

t.test('POST /cgi-bin/stable_token: the cached token; force_refresh under the passive refresh rules', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const ask = async (body: unknown) => (await post<unknown>(app, '/cgi-bin/stable_token', body)).body as unknown as Record<string, unknown>
  const body = { grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET }
  const first = await ask(body)
  t.same(Object.keys(first).sort(), ['access_token', 'expires_in'])
  t.equal((await ask(body)).access_token, first.access_token, 'cached')
  const forced = await ask({ ...body, force_refresh: true })
  t.not(forced.access_token, first.access_token, 'force_refresh replaced it')
  t.equal(mock.forcedCalls(APP_ID), 1)
  t.equal(mock.check(String(forced.access_token)), 'valid')
  const soon = await ask({ ...body, force_refresh: true })
  t.equal(soon.access_token, forced.access_token, 'a second force within 30 s answers the current token')
  t.equal(mock.forcedCalls(APP_ID), 1, 'and spends no forced refresh')
  for (const [bad, errcode] of [['not json', 47001], [{ ...body, force_refresh: 'yes' }, 40097], [{ appid: APP_ID, secret: APP_SECRET }, 40002]] as const) {
    const res = await app.inject({ method: 'POST', url: '/cgi-bin/stable_token', headers: { 'content-type': 'application/json' }, payload: typeof bad === 'string' ? bad : JSON.stringify(bad) })
    t.equal(res.statusCode, 200)
    t.equal(res.json().errcode, errcode, JSON.stringify(res.json()))
  }
})

t.test('WeCom\'s GET /cgi-bin/gettoken, in WeCom\'s shape', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app } = await build(t, { env: { ...on, WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) } })
  const { body } = await get(app, '/cgi-bin/gettoken', { corpid: CORP_ID, corpsecret: AGENT_SECRET })
  t.same(Object.keys(body).sort(), ['access_token', 'errcode', 'errmsg', 'expires_in'])
  t.equal(body.errcode, 0)
  t.equal(body.errmsg, 'ok')
  t.equal(mock.check(String(body.access_token)), 'valid')
  t.equal((await get(app, '/cgi-bin/gettoken', { corpid: CORP_ID, corpsecret: 'z'.repeat(40) })).body.errcode, 40001, 'a wrong secret')
  t.equal((await get(app, '/cgi-bin/gettoken', { corpid: 'ww00000000000000ff', corpsecret: AGENT_SECRET })).body.errcode, 40013, 'another corp')
  t.equal((await get(app, '/cgi-bin/gettoken', { corpsecret: AGENT_SECRET })).body.errcode, 41002, 'no corpid')
  t.equal(mock.calls('gettoken'), 1)
})

t.test('caller keys hold here too; the per-app rate limit counts the appid of the query', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url, { ...on, AUTH_TOKENS: CALLER_KEYS.join(','), RATE_LIMIT_PER_APP: '2' })
  const none = await get(app!, '/cgi-bin/token', tokenQuery())
  t.equal(none.body.errcode, 40164, String(none.body.errmsg))
  const keyed = await get(app!, '/cgi-bin/token', tokenQuery(), { authorization: `Bearer ${CALLER_KEYS[0]!}` })
  t.type(keyed.body.access_token, 'string', JSON.stringify(keyed.body))
  await get(app!, '/cgi-bin/token', tokenQuery(), { authorization: CALLER_KEYS[0]! })
  const limited = await get(app!, '/cgi-bin/token', tokenQuery(), { authorization: CALLER_KEYS[0]! })
  t.equal(limited.body.errcode, 45011, String(limited.body.errmsg))
  t.equal(limited.res.statusCode, 200, 'WeChat\'s shape, HTTP 200')
})

t.test('GET /cgi-bin/ticket/getticket: for a token handed out here while it is the app\'s current one', async (t) => {
  for (const mode of ['dynamic', 'configured'] as const) {
    t.test(mode, async (t) => {
      const { fleet } = await fleetRedis(t)
      const { mock, url } = await startMock(t)
      const { apps: [a, b] } = await fleet(t, 2, url, { ...on, ...(mode === 'configured' ? { WECHAT_APPS: configured } : {}) })
      const token = String((await get(a!, '/cgi-bin/token', tokenQuery())).body.access_token)
      // On another instance than the one that handed the token out.
      const ticket = await get(b!, '/cgi-bin/ticket/getticket', { access_token: token, type: 'jsapi' })
      t.same(Object.keys(ticket.body).sort(), ['errcode', 'errmsg', 'expires_in', 'ticket'], JSON.stringify(ticket.body))
      t.equal(ticket.body.errcode, 0)
      t.equal(mock.calls('getticket', APP_ID), 1)
      const genauth = await post<{ ticket: string }>(a!, '/api/v3/get-wechat-jsapi-ticket', { appId: APP_ID, appSecret: APP_SECRET })
      t.equal(genauth.body.data?.ticket, ticket.body.ticket, 'the ticket the GenAuth route serves')
      t.equal((await get(a!, '/cgi-bin/ticket/getticket', { access_token: token })).body.ticket, ticket.body.ticket, 'type defaults to jsapi')
      t.equal(mock.calls('getticket', APP_ID), 1, 'fetched once')

      const never = await get(b!, '/cgi-bin/ticket/getticket', { access_token: 'x'.repeat(100), type: 'jsapi' })
      t.equal(never.body.errcode, 40001, 'a token never handed out here: the SDK fetches one again')
      t.equal((await get(b!, '/cgi-bin/ticket/getticket', { type: 'jsapi' })).body.errcode, 41001)
      t.equal((await get(b!, '/cgi-bin/ticket/getticket', { access_token: token, type: 'card' })).body.errcode, 40097)

      // The app's token replaced (a forced refresh): the old one is no longer answered.
      const forced = await post<unknown>(a!, '/cgi-bin/stable_token', { grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET, force_refresh: true })
      const fresh = String((forced.body as unknown as Record<string, unknown>).access_token)
      t.not(fresh, token)
      t.equal((await get(b!, '/cgi-bin/ticket/getticket', { access_token: token })).body.errcode, 40001, 'the replaced token: 40001')
      t.equal((await get(b!, '/cgi-bin/ticket/getticket', { access_token: fresh })).body.errcode, 0, 'the current one: the ticket')
      t.equal(mock.calls('getticket', APP_ID), 1, 'a new token does not retire the ticket: not fetched again')
    })
  }
})

t.test('with WECHAT_APPS, getticket serves no app outside it, whatever token of it the store still holds', async (t) => {
  const { redis } = await fleetRedis(t)
  const { mock, url } = await startMock(t)
  const shared = { ...on, REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'removed-app' }
  // The app was configured (an instance of the earlier configuration handed its token out) and is no longer.
  const { app: before } = await build(t, { upstream: url, env: { ...shared, WECHAT_APPS: configured } })
  const token = String((await get(before, '/cgi-bin/token', tokenQuery())).body.access_token)
  await before.close()
  const { app: after } = await build(t, { upstream: url, env: { ...shared, WECHAT_APPS: JSON.stringify({ wx00000000000000ff: OTHER_SECRET }) } })
  const genauth = await post<{ ticket: string }>(after, '/api/v3/get-wechat-jsapi-ticket', { appId: APP_ID, appSecret: APP_SECRET })
  t.equal(genauth.body.apiCode, 2002, `the GenAuth route refuses the app: ${genauth.body.message}`)
  const ticket = await get(after, '/cgi-bin/ticket/getticket', { access_token: token, type: 'jsapi' })
  t.not(ticket.body.errcode, 0, `getticket refuses it too: ${JSON.stringify(ticket.body)}`)
  t.notOk('ticket' in ticket.body, 'no ticket')
  t.equal(mock.calls('getticket'), 0, 'WeChat was asked nothing')
})

t.test('dynamic mode: a token WeChat refused on getticket does not spend the app\'s ticket budget on every call made with it', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const token = String((await get(app, '/cgi-bin/token', tokenQuery())).body.access_token)
  // Another system forces a refresh at WeChat: the token handed out here is no longer valid there.
  await fetch(`${url}/cgi-bin/stable_token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...tokenQuery(), force_refresh: true }) })
  t.equal(mock.check(token), 'invalid')
  // As an SDK does on 40001: a token again (the same one, still the current one here), and getticket again, many times.
  for (let i = 0; i < 5; i++) {
    const again = String((await get(app, '/cgi-bin/token', tokenQuery())).body.access_token)
    const ticket = await get(app, '/cgi-bin/ticket/getticket', { access_token: again, type: 'jsapi' })
    t.equal(ticket.body.errcode, 40001, String(ticket.body.errmsg))
  }
  t.equal(mock.calls('getticket'), 1, 'WeChat\'s refusal of the token is remembered: one getticket call, not one per request')
})

t.test('WeCom\'s ticket calls: the corp\'s and the application\'s, for a token handed out here', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app } = await build(t, { env: { ...on, WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) } })
  const token = String((await get(app, '/cgi-bin/gettoken', { corpid: CORP_ID, corpsecret: AGENT_SECRET })).body.access_token)
  const corp = await get(app, '/cgi-bin/get_jsapi_ticket', { access_token: token })
  t.equal(corp.body.errcode, 0, JSON.stringify(corp.body))
  t.equal(mock.checkTicket(String(corp.body.ticket)), 'valid')
  const agent = await get(app, '/cgi-bin/ticket/get', { access_token: token, type: 'agent_config' })
  t.equal(agent.body.errcode, 0, JSON.stringify(agent.body))
  t.not(agent.body.ticket, corp.body.ticket)
  t.equal((await get(app, '/cgi-bin/ticket/get', { access_token: token, type: 'jsapi' })).body.errcode, 40058)
  t.equal((await get(app, '/cgi-bin/get_jsapi_ticket', { access_token: 'y'.repeat(64) })).body.errcode, 40014, 'a token never handed out here')
  t.equal(mock.calls('get_jsapi_ticket') + mock.calls('ticket/get'), 2)
})

t.test('with WECHAT_COMPAT_API, /openapi.json describes WeChat\'s endpoints too, and stays valid', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, { security?: unknown[] }>> }
  const wechat = Object.entries(doc.paths).filter(([path]) => path.startsWith('/cgi-bin/'))
    .flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`)).sort()
  t.same(wechat, ['GET /cgi-bin/get_jsapi_ticket', 'GET /cgi-bin/gettoken', 'GET /cgi-bin/ticket/get', 'GET /cgi-bin/ticket/getticket', 'GET /cgi-bin/token', 'POST /cgi-bin/stable_token'])
  t.ok(wechat.every((route) => {
    const [method, path] = route.split(' ')
    return (doc.paths[path!]?.[method!.toLowerCase()]?.security?.length ?? 0) > 0
  }), 'each names the caller-key scheme')
  const { Validator } = await import('@seriousme/openapi-schema-validator')
  const result = await new Validator().validate(doc as unknown as Parameters<InstanceType<typeof Validator>['validate']>[0])
  t.equal(result.valid, true, JSON.stringify(result.errors ?? '').slice(0, 2000))
})
