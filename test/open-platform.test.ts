/**
 * Open Platform components: the verify tickets WeChat pushes to the callback, kept and never lost, and the
 * component_access_token fetched with them on the shared engine, behind caller keys.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { loadConfig } from '../src/config.js'
import { CALLER_KEYS, COMPONENT, build, post, startOpenPlatformMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import type { MockOpenPlatform } from '../src/stand-in/open-platform.js'
import { componentCrypto } from '../src/open-platform/msg-crypto.js'

const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
const components = JSON.stringify([COMPONENT])
const on = { WECHAT_COMPONENTS: components, AUTH_TOKENS: CALLER_KEYS.join(','), SCHEDULER_INTERVAL_SECONDS: '0' }
const ROUTE = '/api/v3/get-component-access-token'

/** The service's callback, told to the stand-in as the component's push URL. */
async function callbackOf (app: FastifyInstance, platform: MockOpenPlatform): Promise<string> {
  const url = `http://127.0.0.1:${await listen(app)}/wechat/components/${COMPONENT.appId}/events`
  platform.setCallback(COMPONENT.appId, url)
  return url
}

const tokenOf = async (app: FastifyInstance) => await post(app, ROUTE, { componentAppId: COMPONENT.appId }, auth)

t.test('WECHAT_COMPONENTS is checked at start, and no value of it is repeated in the error', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ ...COMPONENT, appId: 'wx12' }, /appId is not a WeChat appId/],
    [{ ...COMPONENT, appSecret: 'not-hex-secret-but-long-enough!!' }, /appSecret is not 32 hexadecimal/],
    [{ ...COMPONENT, token: 'a b' }, /token is not 3 to 32/],
    [{ ...COMPONENT, encodingAESKey: 'short' }, /encodingAESKey is not 43/],
    [{ ...COMPONENT, previousEncodingAESKey: 'x'.repeat(42) }, /previousEncodingAESKey is not 43/],
    [{ ...COMPONENT, extra: 1 }, /a field WeChat's console does not give/]
  ]
  for (const [component, message] of bad) {
    const err = (() => { try { loadConfig({ WECHAT_COMPONENTS: JSON.stringify([component]) }) } catch (e) { return e as Error } })()
    t.match(err?.message, message)
    t.notOk(err?.message.includes(COMPONENT.appSecret) || err?.message.includes(COMPONENT.encodingAESKey), 'no secret in the error')
  }
  t.throws(() => loadConfig({ WECHAT_COMPONENTS: JSON.stringify([COMPONENT, COMPONENT]) }), /listed twice/)
  t.throws(() => loadConfig({ WECHAT_COMPONENTS: '{}' }), /must be a JSON array/)
})

t.test('a pushed ticket is taken (success) and the component token is fetched with it, once for a herd', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app, logs } = await build(t, { upstream: url, env: on })
  await callbackOf(app, platform)
  t.equal(await platform.pushTicket(COMPONENT.appId), true, 'the callback answered success')
  const answers = await Promise.all(Array.from({ length: 20 }, async () => await tokenOf(app)))
  const tokens = new Set(answers.map((a) => a.body.data?.accessToken))
  t.equal(tokens.size, 1, JSON.stringify(answers[0]?.body))
  t.equal(platform.checkComponentToken([...tokens][0]!), 'valid')
  t.equal(platform.calls('api_component_token', COMPONENT.appId), 1, 'one fetch for 20 requests')
  t.ok(answers[0]!.body.data!.expiresIn > 7000)
  const lines = logs.lines.join('\n')
  for (const secret of platform.secrets()) t.notOk(lines.includes(secret), 'no ticket, token or key in the log')
})

t.test('with no ticket yet: 4009 without asking WeChat for a token, and one push asked for across instances; then served', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 3, url, on)
  // No callback yet: the push asked for cannot arrive while the requests are answered.
  const refused = await Promise.all(Array.from({ length: 30 }, async (_, i) => await tokenOf(apps[i % 3]!)))
  t.ok(refused.every((r) => r.body.apiCode === 4009), JSON.stringify(refused[0]?.body))
  t.equal(platform.calls('api_component_token'), 0, 'WeChat was not asked for a token without a ticket')
  t.ok(await until(() => platform.calls('api_start_push_ticket', COMPONENT.appId) >= 1), 'a push was asked for')
  t.equal(platform.calls('api_start_push_ticket', COMPONENT.appId), 1, 'asked once, for 30 requests on 3 instances')
  await callbackOf(apps[0]!, platform)
  t.equal(await platform.pushTicket(COMPONENT.appId), true)
  const served = await Promise.all(apps.map(async (app) => await tokenOf(app)))
  t.ok(served.every((r) => r.body.statusCode === 200), JSON.stringify(served.map((r) => r.body.apiCode)))
  t.equal(platform.calls('api_component_token'), 1)
})

t.test('a ticket WeChat refuses (61006) is never sent again: a push is asked for, and the next ticket is used', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const callback = await callbackOf(app, platform)
  await platform.pushTicket(COMPONENT.appId)
  platform.inject({ endpoint: 'api_component_token', fault: { kind: 'errcode', errcode: 61006 }, times: 1 })
  // The push asked for cannot arrive while the requests are answered.
  platform.setCallback(COMPONENT.appId, 'http://127.0.0.1:9/unreachable')
  for (let i = 0; i < 10; i++) t.equal((await tokenOf(app)).body.apiCode, 4009)
  t.equal(platform.calls('api_component_token'), 1, 'the refused ticket was sent once')
  t.ok(await until(() => platform.calls('api_start_push_ticket') >= 1), 'a push was asked for')
  t.equal(platform.calls('api_start_push_ticket'), 1, 'once')
  platform.setCallback(COMPONENT.appId, callback)
  t.equal(await platform.pushTicket(COMPONENT.appId), true)
  const served = await tokenOf(app)
  t.equal(served.body.statusCode, 200, `served with the new ticket: ${JSON.stringify(served.body)}`)
  t.equal(platform.calls('api_component_token'), 2)
})

t.test('the ticket survives a flushed store: the instance that holds it writes it back, when it reads it or when another asks', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet, redis } = await fleetRedis(t)
  const { apps } = await fleet(t, 3, url, { ...on, HOT_CACHE_MS: '0' })
  await callbackOf(apps[0]!, platform)
  await platform.pushTicket(COMPONENT.appId)
  const client = redis.client()
  t.teardown(() => client.quit())
  await client.flushall()
  t.equal((await tokenOf(apps[0]!)).body.statusCode, 200, 'the instance that received it fetches with it')
  await client.flushall()
  t.equal((await tokenOf(apps[1]!)).body.statusCode, 200, 'one that never saw it, with the store flushed again, asks: the holder writes it back')
  t.equal(platform.calls('api_start_push_ticket'), 0, 'no push was asked for')
  t.equal(platform.calls('api_component_token'), 2, 'the flushed token fetched again, with the ticket written back')
  t.ok(await client.keys('*verify_ticket*').then((keys) => keys.length === 1), 'the ticket is in the store again')
  await client.flushall()
  await Promise.all([apps[0]!.close(), apps[1]!.close()])
  t.equal((await tokenOf(apps[2]!)).body.apiCode, 4009, 'with its holders gone, the store flushed: none, and a push is asked for')
  t.ok(await until(() => platform.calls('api_start_push_ticket') === 1), 'asked for')
})

t.test('pushes are checked: a bad signature, another component, a replay, hostile XML; never a 5xx', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const callback = await callbackOf(app, platform)
  t.equal(await platform.pushTicket(COMPONENT.appId), true)
  const good = platform.pushes(COMPONENT.appId)[0]!
  t.equal(good.status, 200)
  const query = 'timestamp=1&nonce=abc&msg_signature=' + 'a'.repeat(40)
  const cases: Array<[string, string, string]> = [
    ['bad signature', `${callback}?timestamp=${Math.floor(Date.now() / 1000)}&nonce=abc&msg_signature=${'a'.repeat(40)}`, '<xml><ToUserName><![CDATA[x]]></ToUserName><Encrypt><![CDATA[AAAA]]></Encrypt></xml>'],
    ['stale', `${callback}?${query}`, '<xml><Encrypt>x</Encrypt></xml>'],
    ['entities', `${callback}?timestamp=${Math.floor(Date.now() / 1000)}&nonce=abc&msg_signature=${'a'.repeat(40)}`, '<!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>'],
    ['no body', `${callback}?timestamp=${Math.floor(Date.now() / 1000)}&nonce=abc&msg_signature=${'a'.repeat(40)}`, '']
  ]
  for (const [name, target, body] of cases) {
    const res = await fetch(target, { method: 'POST', headers: { 'content-type': 'text/xml' }, body })
    t.equal(res.status, 400, `${name}: ${await res.text()}`)
  }
  const other = await fetch(callback.replace(COMPONENT.appId, 'wx0000000000000bad'), { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<xml/>' })
  t.equal(other.status, 404, 'not a component of WECHAT_COMPONENTS')
  const big = await fetch(callback + '?' + query, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: 'x'.repeat(70_000) })
  t.equal(big.status, 413, 'oversized: refused before it is read')
  t.match(await big.text(), /^The push is refused/, 'in plain text, as the callback answers')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, 'wxtoken_component_pushes_total{outcome="accepted",info_type="component_verify_ticket"} 1')
  t.match(metrics, /wxtoken_component_ticket_age_seconds\{component_app_id="wxc0c0c0c0c0c0c0c0"\} \d+/)
  t.match(metrics, 'wxtoken_component_pushes_total{outcome="refused",info_type="too-large"} 1')
})

t.test('a push WeChat sends again is answered success and acted on once; an older ticket never replaces a newer one', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const callback = await callbackOf(app, platform)
  await platform.pushTicket(COMPONENT.appId)
  const first = app.verifyTickets.held(COMPONENT.appId)
  t.equal(first?.ticket, platform.latestTicket(COMPONENT.appId))
  // A push made ten minutes before, arriving now (WeChat sending it again late): signed and encrypted as WeChat does.
  const crypto = componentCrypto(COMPONENT)
  const createTime = Math.floor(first!.createdAt / 1000) - 600
  const message = `<xml><AppId><![CDATA[${COMPONENT.appId}]]></AppId><CreateTime>${createTime}</CreateTime>` +
    '<InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@an-older-one]]></ComponentVerifyTicket></xml>'
  const encrypt = crypto.encrypt(message)
  const timestamp = String(Math.floor(Date.now() / 1000))
  const nonce = 'n0nce123'
  const target = `${callback}?timestamp=${timestamp}&nonce=${nonce}&encrypt_type=aes&msg_signature=${crypto.signature(timestamp, nonce, encrypt)}`
  const body = `<xml><ToUserName><![CDATA[${COMPONENT.appId}]]></ToUserName><Encrypt><![CDATA[${encrypt}]]></Encrypt></xml>`
  for (let i = 0; i < 2; i++) {
    const res = await fetch(target, { method: 'POST', headers: { 'content-type': 'text/xml' }, body })
    t.equal(await res.text(), 'success', i === 0 ? 'taken' : 'the same push again: answered as before')
  }
  t.equal((await app.verifyTickets.usable(COMPONENT.appId))?.ticket, first!.ticket, 'the newer ticket is kept')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, 'wxtoken_component_pushes_total{outcome="accepted",info_type="component_verify_ticket"} 2')
  t.match(metrics, 'wxtoken_component_pushes_total{outcome="replayed",info_type="component_verify_ticket"} 1')
})

t.test('the component routes need caller keys, unless the operator opts out', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: { WECHAT_COMPONENTS: components, SCHEDULER_INTERVAL_SECONDS: '0' } })
  await callbackOf(app, platform)
  await platform.pushTicket(COMPONENT.appId)
  t.equal((await post(app, ROUTE, { componentAppId: COMPONENT.appId })).body.apiCode, 2003, 'no AUTH_TOKENS: refused')
  const { app: open } = await build(t, { upstream: url, env: { WECHAT_COMPONENTS: components, SCHEDULER_INTERVAL_SECONDS: '0', COMPONENT_ROUTES_WITHOUT_KEYS: 'true' } })
  await callbackOf(open, platform)
  await platform.pushTicket(COMPONENT.appId)
  t.equal((await post(open, ROUTE, { componentAppId: COMPONENT.appId })).body.statusCode, 200, 'opted out: served')
  const { app: keyed } = await build(t, { upstream: url, env: on })
  t.equal((await post(keyed, ROUTE, { componentAppId: COMPONENT.appId })).body.apiCode, 2003, 'AUTH_TOKENS set: a key is needed')
  t.equal((await post(keyed, ROUTE, { componentAppId: 'wx0000000000000bad' }, auth)).body.apiCode, 2002, 'a component not configured')
})

t.test('a ticket WeChat refused is not brought back by an instance that held it, after the store lost the refusal', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { fleet, redis } = await fleetRedis(t)
  const { apps } = await fleet(t, 2, url, { ...on, HOT_CACHE_MS: '0' })
  const [a, b] = apps as [FastifyInstance, FastifyInstance]
  await callbackOf(a, platform)
  t.equal(await platform.pushTicket(COMPONENT.appId), true)
  t.equal((await b.verifyTickets.usable(COMPONENT.appId))?.ticket, platform.latestTicket(COMPONENT.appId), 'b holds it too')
  // WeChat refuses it from now on, and its pushes go nowhere for a while.
  platform.setCallback(COMPONENT.appId, 'http://127.0.0.1:9/unreachable')
  platform.inject({ endpoint: 'api_component_token', fault: { kind: 'errcode', errcode: 61006 } })
  const told = new Promise<void>((resolve) => { b.store.onChange((subject) => { if (subject === `component_ticket|${COMPONENT.appId}`) resolve() }) })
  t.equal((await tokenOf(a)).body.apiCode, 4009)
  await told
  const client = redis.client()
  t.teardown(() => client.quit())
  await client.flushall()
  t.equal((await tokenOf(b)).body.apiCode, 4009, 'b has no usable ticket either')
  t.equal(platform.calls('api_component_token'), 1, 'the refused ticket was sent once, by a alone')
  t.same((await client.keys('*verify_ticket')), [], 'and not written back as a good one')
})

t.test('a pre-auth code: a new one at every call, fetched with the cached component token', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const PRE = '/api/v3/get-component-pre-auth-code'
  t.equal((await post(app, PRE, { componentAppId: COMPONENT.appId }, auth)).body.apiCode, 4009, 'no ticket yet')
  await callbackOf(app, platform)
  await platform.pushTicket(COMPONENT.appId)
  const codes = []
  for (let i = 0; i < 2; i++) {
    const { body } = await post<{ preAuthCode: string, expiresIn: number }>(app, PRE, { componentAppId: COMPONENT.appId }, auth)
    t.ok(body.data !== undefined && body.data.expiresIn > 1700 && body.data.expiresIn <= 1800, JSON.stringify(body))
    codes.push(body.data?.preAuthCode)
  }
  t.not(codes[0], codes[1], 'one per link')
  t.ok(codes.every((code) => platform.issuedPreAuthCodes().includes(code!)), 'WeChat\'s own codes')
  t.equal(platform.calls('api_component_token'), 1, 'the component token fetched once')
  t.equal((await post(app, PRE, { componentAppId: COMPONENT.appId })).body.apiCode, 2003, 'a caller key is needed')
})

t.test('during a key change, a push under the previous EncodingAESKey is taken and counted, so the old key can be removed in time', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const changed = { ...COMPONENT, encodingAESKey: 'ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut', previousEncodingAESKey: COMPONENT.encodingAESKey }
  const { app, logs } = await build(t, { upstream: url, env: { ...on, WECHAT_COMPONENTS: JSON.stringify([changed]) } })
  await callbackOf(app, platform)
  t.equal(await platform.pushTicket(COMPONENT.appId), true, 'WeChat still encrypts with the old key: taken')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, 'wxtoken_component_pushes_total{outcome="previous_key",info_type="component_verify_ticket"} 1')
  t.ok(logs.lines.some((line) => line.includes('previousEncodingAESKey')), 'and logged')
  t.notOk(logs.lines.some((line) => line.includes(changed.encodingAESKey) || line.includes(COMPONENT.encodingAESKey)), 'no key in the log')
})
