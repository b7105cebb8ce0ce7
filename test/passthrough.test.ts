/**
 * WECHAT_PASSTHROUGH: every other WeChat call passed through to WeChat (or WeCom) from this service's address, the
 * body and the answer streamed, the caller's key kept here, the token endpoints never passed on, and a token WeChat
 * refuses repaired once for every SDK holding it.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { Readable } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { loadConfig } from '../src/config.js'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, CALLER_KEYS, COMPONENT, CORP_ID, TestClock, build, startMock, startOpenPlatformMock, startWecomMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { until } from './helpers/until.js'
import { once } from 'node:events'
import { listen } from './helpers/raw-http.js'
import { connect } from 'node:net'

/** Sends a request as written, on a connection of its own, and reads everything until the service closes it. */
async function raw (port: number, head: string): Promise<string> {
  const socket = connect({ port, host: '127.0.0.1' })
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.write(head.replace(/\r\n\r\n$/, '\r\nconnection: close\r\n\r\n'))
  await new Promise((resolve) => socket.once('close', resolve))
  return Buffer.concat(chunks).toString('latin1')
}
import { REWRITE_MS } from '../src/wechat-api/handed-out.js'

const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
const configured = JSON.stringify({ [APP_ID]: APP_SECRET })
const wecomApps = JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } })
const on = { WECHAT_COMPAT_API: 'true', WECHAT_PASSTHROUGH: 'true', AUTH_TOKENS: CALLER_KEYS.join(','), SCHEDULER_INTERVAL_SECONDS: '0' }

async function call (app: FastifyInstance, method: 'GET' | 'POST', url: string, payload?: unknown, headers: Record<string, string> = auth) {
  const res = await app.inject({
    method,
    url,
    headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(payload === undefined ? {} : { payload: JSON.stringify(payload) })
  })
  return { res, body: String(res.headers['content-type'] ?? '').includes('json') ? res.json() as Record<string, unknown> : undefined }
}

async function tokenOf (app: FastifyInstance): Promise<string> {
  const { body } = await call(app, 'GET', `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`)
  if (typeof body?.access_token !== 'string') throw new Error(`no token: ${JSON.stringify(body)}`)
  return body.access_token
}

async function wecomTokenOf (app: FastifyInstance): Promise<string> {
  const { body } = await call(app, 'GET', `/cgi-bin/gettoken?corpid=${CORP_ID}&corpsecret=${AGENT_SECRET}`)
  if (typeof body?.access_token !== 'string') throw new Error(`no token: ${JSON.stringify(body)}`)
  return body.access_token
}

/** A server that is not WeChat: what it was asked, and its host:port. */
async function elsewhere (t: { teardown: (fn: () => unknown) => void }): Promise<{ hits: string[], host: string }> {
  const hits: string[] = []
  const server = createServer((req, res) => { hits.push(req.url ?? ''); res.end('{}') })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  return { hits, host: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

const message = { touser: 'oUser0001', msgtype: 'text', text: { content: 'hello' } }

t.test('needs the token endpoints answered here and caller keys; off by default', async (t) => {
  t.throws(() => loadConfig({ WECHAT_PASSTHROUGH: 'true', AUTH_TOKENS: KEY }), /WECHAT_COMPAT_API=true/)
  t.throws(() => loadConfig({ WECHAT_PASSTHROUGH: 'true', WECHAT_COMPAT_API: 'true' }), /caller keys/)
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_PASSTHROUGH: 'false' } })
  const token = await tokenOf(app)
  const { res } = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`)
  t.equal(res.statusCode, 404, 'not passed through')
  t.equal(mock.calls('menu/get'), 0)
})

t.test('a call passes through with its query and body; the caller key stays here', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const token = await tokenOf(app)
  const menu = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`, undefined, { ...auth, cookie: 'a=b', 'x-forwarded-for': '1.2.3.4' })
  t.equal(menu.res.statusCode, 200)
  t.same(menu.body, { menu: { button: [{ type: 'click', name: 'Today', key: 'V1001_TODAY' }] } }, 'WeChat\'s answer as it sent it')
  t.ok(menu.res.headers['x-request-id'], 'with a request id')
  t.equal(mock.calls('menu/get', APP_ID), 1, 'reached WeChat with the app\'s token')
  const seen = mock.headersOf('menu/get') ?? {}
  t.notOk(seen.authorization, 'no caller key upstream')
  t.notOk(seen.cookie, 'no cookie upstream')
  t.notOk(seen['x-forwarded-for'], 'no forwarding header upstream')

  const sent = await call(app, 'POST', `/cgi-bin/message/custom/send?access_token=${token}`, message)
  t.same(sent.body, { errcode: 0, errmsg: 'ok' })
  t.same(mock.delivered.map((m) => m.body), [message], 'the body arrived whole')
  t.equal(mock.headersOf('message/custom/send')?.['content-type'], 'application/json', 'with its content-type')

  const ips = await call(app, 'GET', `/cgi-bin/getcallbackip?access_token=${token}`)
  t.same(ips.body?.ip_list, ['101.226.103.61', '101.226.103.62'])
  const lines = logs.lines.join('\n')
  t.notOk(lines.includes(token), 'no token in the log')
  t.notOk(lines.includes(APP_SECRET), 'no secret in the log')
  t.notOk(lines.includes(KEY), 'no caller key in the log')
})

t.test('without a caller key nothing passes through: WeChat\'s whitelist refusal', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const token = await tokenOf(app)
  for (const headers of [{}, { authorization: 'Bearer not-a-key-0000000000' }] as Array<Record<string, string>>) {
    const { body } = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`, undefined, headers)
    t.equal(body?.errcode, 40164, String(body?.errmsg))
  }
  t.equal(mock.calls('menu/get'), 0, 'WeChat was asked nothing')
})

t.test('the token and ticket endpoints are never passed on, whatever the method or spelling; nor odd paths', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const query = `grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`
  const cases: Array<['GET' | 'POST', string, number]> = [
    ['POST', `/cgi-bin/token?${query}`, 43001],
    ['POST', `/cgi-bin/TOKEN?${query}`, 43001],
    ['GET', `/cgi-bin/Token?${query}`, 43001],
    ['GET', `/cgi-bin/stable_token?${query}`, 43002],
    ['GET', `/cgi-bin/Stable_Token?${query}`, 43002],
    ['POST', `/cgi-bin/gettoken?corpid=${CORP_ID}&corpsecret=${AGENT_SECRET}`, 43001],
    ['POST', '/cgi-bin/ticket/getticket?access_token=x&type=jsapi', 43001],
    ['POST', '/cgi-bin/get_jsapi_ticket?access_token=x', 43001],
    ['GET', '/cgi-bin/menu//get?access_token=x', 40097],
    ['GET', '/cgi-bin/menu/get/?access_token=x', 40097],
    ['GET', '/cgi-bin/menu/get;x?access_token=x', 40097],
    ['GET', '/sns/%40evil.example/get?access_token=x', 40097]
  ]
  for (const [method, path, errcode] of cases) {
    const { res, body } = await call(app, method, path, method === 'POST' ? { appid: APP_ID, secret: APP_SECRET, grant_type: 'client_credential' } : undefined)
    t.equal(res.statusCode, 200, `${method} ${path}`)
    t.equal(body?.errcode, errcode, `${method} ${path}: ${String(body?.errmsg)}`)
    t.notOk(String(body?.errmsg).includes(APP_SECRET), 'no secret in errmsg')
  }
  t.equal(mock.calls('token') + mock.calls('stable_token') + mock.calls('getticket'), 0, 'WeChat was asked for no token')
  // Targets as a client that does not tidy them sends them: what the router sees, never normalized into another path.
  const port = await listen(app)
  for (const target of [`/cgi-bin/menu/../token?${query}`, `/cgi-bin/menu/%2e%2e/token?${query}`, `/cgi-bin/./token?${query}`, '/cgi-bin/menu/../../x/get']) {
    const answer = await raw(port, `GET ${target} HTTP/1.1\r\nhost: x\r\nauthorization: ${KEY}\r\n\r\n`)
    t.match(answer, /"errcode":40097/, target)
  }
  t.equal(mock.calls('token') + mock.calls('stable_token'), 0, 'WeChat was asked for no token')
  // A spelling the router decodes to a token endpoint is that endpoint: answered from the cache.
  const decoded = await call(app, 'GET', `/cgi-bin/%74oken?${query}`)
  t.type(decoded.body?.access_token, 'string', 'answered from the cache')
})

t.test('an absolute-form target goes to WeChat\'s base all the same; the Host sent is the upstream\'s', async (t) => {
  const { mock, url } = await startMock(t)
  const { hits, host: other } = await elsewhere(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const token = await tokenOf(app)
  const port = await listen(app)
  const answer = await raw(port, `GET http://${other}/cgi-bin/menu/get?access_token=${token} HTTP/1.1\r\nHost: ${other}\r\nauthorization: ${KEY}\r\n\r\n`)
  t.match(answer, /^HTTP\/1\.1 200/)
  t.match(answer, /V1001_TODAY/, 'answered by WeChat\'s base')
  t.equal(hits.length, 0, 'the host in the target was not called')
  t.equal(mock.headersOf('menu/get')?.host, new URL(url).host, 'Host is the upstream\'s')
})

t.test('bodies stream both ways: a 3 MB upload arrives whole; a file comes back as WeChat sent it', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured, REQUEST_TIMEOUT_MS: '60000' } })
  const token = await tokenOf(app)
  const port = await listen(app)
  const upload = randomBytes(3 * 1024 * 1024)
  const boundary = '----wtc' + randomBytes(8).toString('hex')
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="media"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n`),
    upload,
    Buffer.from(`\r\n--${boundary}--\r\n`)
  ])
  // Chunked, in pieces: nothing waits for the whole body before sending it on.
  const pieces = Readable.from((async function * () { for (let at = 0; at < body.length; at += 65536) yield body.subarray(at, at + 65536) })())
  const res = await request(`http://127.0.0.1:${port}/cgi-bin/media/upload?access_token=${token}&type=image`, {
    method: 'POST', headers: { ...auth, 'content-type': `multipart/form-data; boundary=${boundary}` }, body: pieces
  })
  const answer = await res.body.json() as { media_id?: string }
  t.type(answer.media_id, 'string', JSON.stringify(answer))
  t.ok(mock.mediaBytes(answer.media_id ?? '')?.equals(body), 'the body arrived byte for byte')

  const file = randomBytes(2 * 1024 * 1024)
  const mediaId = mock.putMedia(file)
  const got = await request(`http://127.0.0.1:${port}/cgi-bin/media/get?access_token=${token}&media_id=${mediaId}`, { headers: auth })
  const bytes = Buffer.from(await got.body.arrayBuffer())
  t.equal(got.statusCode, 200)
  t.equal(got.headers['content-type'], 'image/jpeg')
  t.equal(got.headers['content-disposition'], `attachment; filename="${mediaId}.jpg"`)
  t.equal(createHash('sha256').update(bytes).digest('hex'), createHash('sha256').update(file).digest('hex'), 'the file came back byte for byte')
})

t.test('a body over WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES is refused, declared or streamed, and never reaches WeChat whole', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured, WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES: '65536' } })
  const token = await tokenOf(app)
  const port = await listen(app)
  const big = randomBytes(200 * 1024)
  const declared = await request(`http://127.0.0.1:${port}/cgi-bin/media/upload?access_token=${token}`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(big.length) }, body: big
  }).then(async (res) => await res.body.json() as Record<string, unknown>).catch((err: Error) => ({ closed: err.message }))
  const streamed = await request(`http://127.0.0.1:${port}/cgi-bin/media/upload?access_token=${token}`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/octet-stream' },
    body: Readable.from((async function * () { for (let at = 0; at < big.length; at += 8192) yield big.subarray(at, at + 8192) })())
  }).then(async (res) => await res.body.json() as Record<string, unknown>).catch((err: Error) => ({ closed: err.message }))
  for (const [name, answer] of [['declared', declared], ['streamed', streamed]] as const) {
    // Answered 40006 before the client finished sending, or the connection closed on it: either way refused.
    t.ok((answer as { errcode?: unknown }).errcode === 40006 || 'closed' in answer, `${name}: ${JSON.stringify(answer)}`)
  }
  t.equal(mock.calls('media/upload'), 0, 'WeChat never had a whole body')
  const small = await call(app, 'POST', `/cgi-bin/message/custom/send?access_token=${token}`, message)
  t.same(small.body, { errcode: 0, errmsg: 'ok' }, 'a body within the limit passes')
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /wxtoken_passthrough_calls_total\{upstream="wechat",outcome="refused"\} 2/)
  t.match(metrics.body, /wxtoken_passthrough_calls_total\{upstream="wechat",outcome="failed"\} 0/)
})

t.test('a redirect is not followed; an answer that does not come is "system error" after WECHAT_PASSTHROUGH_TIMEOUT_MS', async (t) => {
  const { mock, url } = await startMock(t)
  const { hits, host: other } = await elsewhere(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured, WECHAT_PASSTHROUGH_TIMEOUT_MS: '1000' } })
  const token = await tokenOf(app)
  const location = `http://${other}/steal`
  mock.inject({ endpoint: 'menu/get', fault: { kind: 'redirect', location }, times: 1 })
  const moved = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`)
  t.equal(moved.res.statusCode, 302, 'WeChat\'s answer, as it sent it')
  t.equal(moved.res.headers.location, location)
  t.equal(hits.length, 0, 'not followed')

  mock.inject({ endpoint: 'menu/get', fault: { kind: 'hang' }, times: 1 })
  const hung = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`)
  t.equal(hung.body?.errcode, -1, String(hung.body?.errmsg))
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /wxtoken_passthrough_calls_total\{upstream="wechat",outcome="failed"\} 1/)
})

t.test('a token WeChat refused is replaced once and the call sent again with it: the message goes out once', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const held = await tokenOf(app)
  mock.revokeTokens(APP_ID)
  const sent = await call(app, 'POST', `/cgi-bin/message/custom/send?access_token=${held}`, message)
  t.same(sent.body, { errcode: 0, errmsg: 'ok' }, 'the call went through with the new token')
  t.equal(mock.delivered.length, 1, 'delivered once')
  t.equal(mock.issued(APP_ID), 2, 'one replacement')
  const current = await tokenOf(app)
  t.not(current, held, 'the token endpoint answers the replacement')
  t.equal(mock.check(current), 'valid')
  // Every SDK still holding the refused token keeps working, without another replacement.
  const herd = await Promise.all(Array.from({ length: 20 }, async () => await call(app, 'GET', `/cgi-bin/menu/get?access_token=${held}`)))
  t.ok(herd.every((r) => r.body?.menu !== undefined), 'all 20 answered')
  t.equal(mock.issued(APP_ID), 2, 'no further replacement')
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /wxtoken_passthrough_token_repairs_total\{upstream="wechat",outcome="replaced"\} 1/)
  t.match(metrics.body, /wxtoken_passthrough_token_repairs_total\{upstream="wechat",outcome="resent"\} 20/)
  const lines = logs.lines.join('\n')
  t.notOk(lines.includes(held) || lines.includes(current), 'no token in the log')
})

t.test('a fleet of SDKs holding a refused token over 3 instances costs one replacement', async (t) => {
  const { mock, url } = await startMock(t)
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 3, url, { ...on, WECHAT_APPS: configured })
  const held = await tokenOf(apps[0]!)
  mock.revokeTokens(APP_ID)
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => await call(apps[i % 3]!, 'GET', `/cgi-bin/menu/get?access_token=${held}`)))
  t.ok(answers.every((a) => a.body?.menu !== undefined), JSON.stringify(answers.find((a) => a.body?.menu === undefined)?.body))
  t.equal(mock.issued(APP_ID), 2, 'one replacement for the whole fleet')
})

t.test('a refusal that persists costs one token fetch per NEGATIVE_CACHE_SECONDS, however many calls are refused', async (t) => {
  for (const revoked of [true, false]) {
    t.test(revoked ? 'the replacement is refused too' : 'WeChat gives the refused token back', async (t) => {
      const { mock, url } = await startMock(t)
      const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
      const held = await tokenOf(app)
      if (revoked) mock.revokeTokens(APP_ID)
      mock.inject({ endpoint: 'menu/get', fault: { kind: 'errcode', errcode: 40001 } })
      for (let i = 0; i < 10; i++) {
        const { body } = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${i === 0 ? held : await tokenOf(app)}`)
        t.equal(body?.errcode, 40001, 'WeChat\'s answer passed on')
      }
      t.equal(mock.calls('stable_token', APP_ID), 2, 'one fetch to repair it, then remembered as refused')
      t.equal(mock.calls('menu/get'), revoked ? 11 : 10, 'sent again only with a new token')
      const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
      t.match(metrics, `wxtoken_passthrough_token_repairs_total{upstream="wechat",outcome="refused_again"} ${revoked ? 1 : 0}`)
      t.match(metrics, `wxtoken_passthrough_token_repairs_total{upstream="wechat",outcome="passed_on"} ${revoked ? 9 : 10}`)
    })
  }
})

t.test('an app\'s token refused under /sns/ (where calls take a user\'s OAuth token) is not replaced', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const held = await tokenOf(app)
  // The stand-in's one /sns/ call, made to answer 40001 as /sns/userinfo does for a token that is not a user's.
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 } })
  const again = await call(app, 'GET', `/sns/jscode2session?access_token=${held}&openid=oUser0001`)
  mock.clearFaults()
  t.equal(again.body?.errcode, 40001, String(again.body?.errmsg))
  t.equal(mock.calls('stable_token', APP_ID), 1, 'no token fetch')
  t.equal(mock.check(held), 'valid')
})

t.test('a token not handed out here gets WeChat\'s answer as it is; without the app\'s secret (dynamic mode) nothing is replaced', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const stranger = await call(app, 'GET', '/cgi-bin/menu/get?access_token=not-from-here')
  t.equal(stranger.body?.errcode, 40001, 'WeChat\'s refusal')
  t.match(String(stranger.body?.errmsg), /rid:/, 'as WeChat worded it')
  const held = await tokenOf(app)
  mock.revokeTokens(APP_ID)
  const refused = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${held}`)
  t.equal(refused.body?.errcode, 40001)
  t.equal(mock.issued(APP_ID), 1, 'no secret here to replace it with')
})

t.test('a call with a WeCom token handed out here goes to WeCom, and its refused token is repaired there', async (t) => {
  const { mock: wechat, url } = await startMock(t)
  const { mock: wecom, url: wecomUrl } = await startWecomMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECOM_API_BASE: wecomUrl, WECOM_APPS: wecomApps } })
  const held = await wecomTokenOf(app)
  const user = await call(app, 'GET', `/cgi-bin/user/get?access_token=${held}&userid=zhangsan`)
  t.equal(user.body?.userid, 'zhangsan', JSON.stringify(user.body))
  t.equal(wecom.calls('user/get', CORP_ID), 1, 'answered by WeCom')
  t.equal(wechat.calls('menu/get') + wechat.calls('token') + wechat.calls('stable_token'), 0, 'WeChat saw nothing')
  wecom.endToken(CORP_ID, AGENT_ID, 40014)
  const again = await call(app, 'GET', `/cgi-bin/user/get?access_token=${held}&userid=lisi`)
  t.equal(again.body?.userid, 'lisi', JSON.stringify(again.body))
  t.equal(wecom.issued(CORP_ID, AGENT_ID), 2, 'one replacement')
  t.not(await wecomTokenOf(app), held)
})

t.test('an index of tokens the store lost is written again by the instance that hands the token out', async (t) => {
  const { url } = await startMock(t)
  const { mock: wecom, url: wecomUrl } = await startWecomMock(t)
  const { fleet, redis } = await fleetRedis(t)
  const clock = new TestClock()
  const { apps } = await fleet(t, 2, url, { ...on, WECOM_API_BASE: wecomUrl, WECOM_APPS: wecomApps }, clock)
  const held = await wecomTokenOf(apps[0]!)
  const client = redis.client()
  t.teardown(() => client.quit())
  await client.flushall()
  t.equal(await wecomTokenOf(apps[0]!), held, 'served again from the hot cache or WeCom, the same token')
  const lost = await call(apps[1]!, 'GET', `/cgi-bin/user/get?access_token=${held}&userid=a`)
  t.not(lost.body?.userid, 'a', 'the other instance cannot tell whose the token is yet')
  clock.advance(REWRITE_MS + 1000)
  await wecomTokenOf(apps[0]!)
  const found = await call(apps[1]!, 'GET', `/cgi-bin/user/get?access_token=${held}&userid=b`)
  t.equal(found.body?.userid, 'b', JSON.stringify(found.body))
  t.ok(wecom.calls('user/get', CORP_ID) >= 1)
})

t.test('with WECHAT_PASSTHROUGH, /openapi.json describes the pass-through once (under /cgi-bin/), and stays valid', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: on })
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, { operationId?: string }>> }
  t.same(Object.keys(doc.paths['/cgi-bin/{*}'] ?? {}).sort(), ['get', 'post'])
  t.notOk(Object.keys(doc.paths).some((path) => path.startsWith('/sns/')), 'the other roots are not repeated')
  const { Validator } = await import('@seriousme/openapi-schema-validator')
  const result = await new Validator().validate(doc as unknown as Parameters<InstanceType<typeof Validator>['validate']>[0])
  t.equal(result.valid, true, JSON.stringify(result.errors ?? '').slice(0, 2000))
})

t.test('an SDK holding an old token is repaired even when the token that replaced it is refused too', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const first = await tokenOf(app)
  mock.revokeTokens(APP_ID)
  t.ok((await call(app, 'GET', `/cgi-bin/menu/get?access_token=${first}`)).body?.menu, 'replaced once')
  // The replacement is retired too (another system fetched a token); the SDK still holds the first one.
  mock.revokeTokens(APP_ID)
  const answer = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${first}&lang=zh_CN`)
  t.ok(answer.body?.menu, JSON.stringify(answer.body))
  t.equal(mock.issued(APP_ID), 3, 'the refused replacement was replaced, once')
  t.equal(mock.targetOf('menu/get'), `/cgi-bin/menu/get?access_token=${encodeURIComponent(await tokenOf(app))}&lang=zh_CN`, 'sent with the current token')
})

t.test('a call sent again keeps its query as the caller wrote it, but the token; two access_tokens are refused', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const held = await tokenOf(app)
  mock.revokeTokens(APP_ID)
  const query = 'name=%D6%D0&c=%ZZ&b=~&lang=zh_CN'
  const answer = await call(app, 'GET', `/cgi-bin/menu/get?${query}&access_token=${held}`)
  t.ok(answer.body?.menu)
  t.equal(mock.targetOf('menu/get'), `/cgi-bin/menu/get?${query}&access_token=${encodeURIComponent(await tokenOf(app))}`, 'nothing else re-encoded')
  const two = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${held}&access_token=other`)
  t.equal(two.body?.errcode, 40097, String(two.body?.errmsg))
})

t.test('a caller that hangs up is not WeChat failing: counted abandoned, nothing logged as an error', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { ...on, WECHAT_APPS: configured } })
  const token = await tokenOf(app)
  const port = await listen(app)
  for (let i = 0; i < 3; i++) {
    const socket = connect({ port, host: '127.0.0.1' })
    socket.on('error', () => {})
    await once(socket, 'connect')
    socket.write(`POST /cgi-bin/media/upload?access_token=${token} HTTP/1.1\r\nhost: x\r\nauthorization: ${KEY}\r\n` +
      'content-type: application/octet-stream\r\ncontent-length: 100000\r\n\r\n')
    socket.write(randomBytes(1000))
    socket.destroy()
  }
  const metrics = async (): Promise<string> => (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.ok(await until(async () => (await metrics()).includes('wxtoken_passthrough_calls_total{upstream="wechat",outcome="abandoned"} 3'), 5000), 'three abandoned')
  t.match(await metrics(), 'wxtoken_passthrough_calls_total{upstream="wechat",outcome="failed"} 0')
  t.notOk(logs.records.some((r) => Number(r.level) >= 50), 'no error logged')
  t.equal(mock.calls('media/upload'), 0)
})

t.test('a caller that stops reading holds at most half the connections to WeChat, and only until it is cut off', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, {
    upstream: url,
    env: { ...on, WECHAT_APPS: configured, WECHAT_PASSTHROUGH_CONNECTIONS: '2', WECHAT_PASSTHROUGH_TIMEOUT_MS: '60000' }
  })
  const token = await tokenOf(app)
  const port = await listen(app)
  const mediaId = mock.putMedia(randomBytes(16 * 1024 * 1024))
  const stalled = connect({ port, host: '127.0.0.1' })
  stalled.on('error', () => {})
  await once(stalled, 'connect')
  stalled.pause()
  stalled.write(`GET /cgi-bin/media/get?access_token=${token}&media_id=${mediaId} HTTP/1.1\r\nhost: x\r\nauthorization: ${KEY}\r\n\r\n`)
  t.ok(await until(() => mock.calls('media/get') === 1), 'the download began')
  const same = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`)
  t.equal(same.body?.errcode, 45011, 'the same caller past half the connections: refused')
  const other = await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`, undefined, { authorization: `Bearer ${CALLER_KEYS[1]!}` })
  t.ok(other.body?.menu, 'another caller is answered meanwhile')
  // Cut off once it has read nothing for 10 s (long before the 60 s timeout): its call is no longer in flight.
  t.ok(await until(async () => (await call(app, 'GET', `/cgi-bin/menu/get?access_token=${token}`)).body?.menu !== undefined, 20_000, 200),
    'the reader that stopped was cut off, and its caller is served again')
  stalled.destroy()
})

t.test('with WECHAT_COMPONENTS, the component token endpoint is answered from the cache, never passed on', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  const { app } = await build(t, { upstream: url, env: { ...on, WECHAT_COMPONENTS: JSON.stringify([COMPONENT]) } })
  const body = { component_appid: COMPONENT.appId, component_appsecret: COMPONENT.appSecret, component_verify_ticket: 'ticket@@@x' }
  // POST on WeChat's own spelling is the WeChat-shaped route (a static route wins over the pass-through's wildcard):
  // with no ticket pushed yet, 61006 without asking WeChat. Every other method or spelling reaches the pass-through,
  // which refuses it.
  const answered = await call(app, 'POST', '/cgi-bin/component/api_component_token', body)
  t.equal(answered.body?.errcode, 61006, String(answered.body?.errmsg))
  for (const [method, path] of [['POST', '/cgi-bin/component/API_COMPONENT_TOKEN'], ['GET', '/cgi-bin/component/api_component_token']] as const) {
    const { body: answer } = await call(app, method, path, method === 'POST' ? body : undefined)
    t.equal(answer?.errcode, 48001, `${method} ${path}: ${String(answer?.errmsg)}`)
    t.notOk(String(answer?.errmsg).includes(COMPONENT.appSecret))
  }
  t.equal(platform.calls('api_component_token'), 0, 'WeChat saw nothing')
  const other = await call(app, 'POST', '/cgi-bin/component/api_get_authorizer_list?component_access_token=x', { component_appid: COMPONENT.appId, offset: 0, count: 10 })
  t.equal(other.body?.errcode, 40001, 'the other component calls pass through (WeChat answered)')
  t.equal(platform.calls('api_get_authorizer_list'), 1)
})
