/** JS-SDK and card tickets, and the wx.config signature: kept as tokens are, fetched with the token by the refresh-once rule. */
import t from 'tap'
import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { jssdkSignature } from '../src/official-account/ticket-service.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, TestClock, build, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { nextChange, until } from './helpers/until.js'

const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const SIGNATURE = '/api/v3/get-wechat-jssdk-signature'
const TOKEN = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const MINUTE = 60_000

interface TicketData { ticket: string, expiresAt: string, expiresIn: number }
interface SignatureData { appId: string, timestamp: number, nonceStr: string, signature: string }

const { redis, fleet } = await fleetRedis(t)

t.test('the signature of WeChat\'s own example (JS-SDK documentation, appendix 1)', async (t) => {
  const ticket = 'sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg'
  t.equal(jssdkSignature(ticket, 'Wm3WZYTPz0wzccnW', 1414587457, 'http://mp.weixin.qq.com?params=value'), '0f9de62fce790f9a083d5c99e95740ceb90c27ed')
  t.equal(jssdkSignature(ticket, 'Wm3WZYTPz0wzccnW', 1414587457, 'http://mp.weixin.qq.com?params=value#/a/b#c'),
    '0f9de62fce790f9a083d5c99e95740ceb90c27ed', 'the #fragment is not signed')
  t.not(jssdkSignature(ticket, 'Wm3WZYTPz0wzccnW', 1414587457, 'http://mp.weixin.qq.com/?params=value'),
    '0f9de62fce790f9a083d5c99e95740ceb90c27ed', 'the url is signed as given, not normalized')
})

t.test('a ticket: fetched once with the token, then served from the cache; each type its own', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url })
  const first = await post<TicketData>(app, TICKET, body)
  t.equal(first.body.statusCode, 200, first.body.message)
  const ticket = first.body.data!.ticket
  t.equal(mock.checkTicket(ticket), 'valid', 'WeChat issued it')
  t.match(first.body.data!.expiresAt, /^\d{10}$/, 'expiresAt: Unix seconds as a string')
  t.ok(first.body.data!.expiresIn > 7100 && first.body.data!.expiresIn <= 7200)
  for (let i = 0; i < 5; i++) t.equal((await post<TicketData>(app, TICKET, { ...body, type: 'jsapi' })).body.data?.ticket, ticket)
  t.equal(mock.calls('getticket'), 1, 'one getticket')
  t.equal(mock.issued(APP_ID), 1, 'one token')
  const card = await post<TicketData>(app, TICKET, { ...body, type: 'wx_card' })
  t.equal(card.body.statusCode, 200)
  t.not(card.body.data!.ticket, ticket, 'the card ticket is another')
  t.equal(mock.calls('getticket'), 2)
  t.equal(mock.issued(APP_ID), 1, 'with the same token')
  t.notOk(logs.text.includes(ticket), 'the ticket is never logged')
})

t.test('bad input: an envelope, no upstream call', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const cases: Array<[string, unknown, number]> = [
    [TICKET, { ...body, type: 'card' }, 1002],
    [TICKET, { ...body, type: 1 }, 1002],
    [TICKET, { appId: APP_ID }, 1002],
    [SIGNATURE, body, 1002],
    [SIGNATURE, { ...body, url: '/index.html' }, 1002],
    [SIGNATURE, { ...body, url: 'ftp://example.com/' }, 1002],
    [SIGNATURE, { ...body, url: 'javascript:alert(1)' }, 1002],
    [SIGNATURE, { ...body, url: 'https://' }, 1002],
    [SIGNATURE, { ...body, url: 'https://exa mple.com/' }, 1002],
    [SIGNATURE, { ...body, url: 'https://example.com/\npage' }, 1002],
    [SIGNATURE, { ...body, url: 'https://example.com/\u0000' }, 1002],
    [SIGNATURE, { ...body, url: 'https://example.com/\u007f' }, 1002],
    [SIGNATURE, { ...body, url: `https://example.com/${'a'.repeat(2030)}` }, 1002],
    [SIGNATURE, { ...body, url: ['https://example.com/'] }, 1002]
  ]
  for (const [route, payload, apiCode] of cases) {
    const { res, body: envelope } = await post(app, route, payload)
    t.equal(res.statusCode, 200, 'GenAuth answers business errors with HTTP 200')
    t.equal(envelope.apiCode, apiCode, `${route} ${JSON.stringify(payload).slice(0, 80)}: ${envelope.message}`)
  }
  t.equal(mock.calls('getticket') + mock.calls('stable_token'), 0, 'nothing reached WeChat')
  const long = await post<SignatureData>(app, SIGNATURE, { ...body, url: `https://example.com/${'a'.repeat(2028)}` })
  t.equal(long.body.statusCode, 200, 'a url of 2,048 characters is signed')
})

t.test('the signature route: ready for wx.config, and checked independently', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock })
  const page = 'https://shop.example.com/cart?item=1&from=[a]|b#/checkout?x=1'
  const answers = []
  for (let i = 0; i < 3; i++) answers.push((await post<SignatureData>(app, SIGNATURE, { ...body, url: page })).body)
  const ticket = (await post<TicketData>(app, TICKET, body)).body.data!.ticket
  t.equal(mock.calls('getticket'), 1, 'the signatures and the ticket route share one ticket')
  for (const answer of answers) {
    t.equal(answer.statusCode, 200, answer.message)
    const { appId, timestamp, nonceStr, signature } = answer.data!
    t.equal(appId, APP_ID)
    t.ok(Math.abs(timestamp - Math.floor(clock.now() / 1000)) <= 2, 'timestamp: now, in seconds')
    t.match(nonceStr, /^[A-Za-z0-9]{16}$/)
    const expected = createHash('sha1')
      .update(`jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=https://shop.example.com/cart?item=1&from=[a]|b`)
      .digest('hex')
    t.equal(signature, expected, 'SHA-1 of the four fields, the url without its fragment and unescaped')
  }
  t.equal(new Set(answers.map((a) => a.data!.nonceStr)).size, 3, 'a new nonce per call')
  const upper = await post<SignatureData>(app, SIGNATURE, { appId: 'wx' + APP_ID.slice(2).toUpperCase(), appSecret: APP_SECRET, url: page })
  t.equal(upper.body.data?.appId, APP_ID, 'the appId as WeChat spells it, lower-case')
})

t.test('a wrong secret gets no ticket, and takes no ticket lock', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  t.equal((await post(app, TICKET, body)).body.statusCode, 200)
  const wrong = await post(app, TICKET, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(wrong.body.apiCode, 3002, 'WeChat refused the secret (checked as for a token)')
  const signature = await post(app, SIGNATURE, { appId: APP_ID, appSecret: OTHER_SECRET, url: 'https://example.com/' })
  t.equal(signature.body.apiCode, 3002)
  t.equal(signature.body.data, undefined)
  t.equal(mock.calls('getticket'), 1, 'no getticket for a wrong secret')
  t.equal(await app.store.getValue(APP_ID, 'jsapi_ticket:lock'), null)
})

t.test('300 concurrent cold ticket requests over 3 instances on one Redis: 1 token call and 1 getticket', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'latency', ms: 200 }, endpoint: 'getticket' })
  const { apps } = await fleet(t, 3, url)
  const answers = await Promise.all(Array.from({ length: 300 }, async (_, i) =>
    (await post<TicketData>(apps[i % 3]!, i % 2 === 0 ? TICKET : SIGNATURE, i % 2 === 0 ? body : { ...body, url: 'https://example.com/' })).body))
  t.ok(answers.every((a) => a.statusCode === 200), 'all answered')
  const tickets = new Set(answers.filter((_, i) => i % 2 === 0).map((a) => a.data!.ticket))
  t.equal(tickets.size, 1, 'one ticket for all')
  t.equal(mock.issued(APP_ID), 1, '1 token call')
  t.equal(mock.calls('getticket'), 1, '1 getticket')
})

t.test('a token invalidated by another system: the ticket fetch replaces it once and recovers', async (t) => {
  for (const mode of ['stable', 'classic']) {
    t.test(mode, async (t) => {
      const { mock, url } = await startMock(t)
      const { apps: [a, b] } = await fleet(t, 2, url, { WECHAT_TOKEN_MODE: mode, HOT_CACHE_MS: '60000' })
      const token = (await post(a!, TOKEN, body)).body.data!.accessToken
      mock.revokeTokens(APP_ID)
      t.equal(mock.check(token), 'invalid', 'another system replaced the token')
      const answer = await post<TicketData>(b!, TICKET, body)
      t.equal(answer.body.statusCode, 200, answer.body.message)
      t.equal(mock.checkTicket(answer.body.data!.ticket), 'valid')
      t.equal(mock.calls('getticket'), 2, 'refused once, then fetched')
      t.equal(mock.issued(APP_ID), 2, 'one token refresh')
      const now = (await post(a!, TOKEN, body)).body.data!.accessToken
      t.not(now, token, 'every instance serves the new token')
      t.equal(mock.check(now), 'valid')
    })
  }
})

t.test('a token refused again after its replacement: apiCode 3011, no loop, and no new replacement for a while', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock, env: { WECHAT_TOKEN_MODE: 'classic', HOT_CACHE_MS: '0' } })
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: 'getticket' })
  const answer = await post(app, TICKET, body)
  t.equal(answer.body.apiCode, 3011, answer.body.message)
  t.equal(mock.calls('getticket'), 2, 'the first call and one retry')
  t.equal(mock.issued(APP_ID), 2, 'the token replaced once')
  for (let i = 0; i < 20; i++) {
    const again = await post(app, i % 2 === 0 ? SIGNATURE : TICKET, { ...body, url: 'https://example.com/' })
    t.equal(again.body.apiCode, 3011)
  }
  t.equal(mock.calls('getticket'), 22, 'each later request calls once')
  t.equal(mock.issued(APP_ID), 2, 'and does not replace the token (in classic mode, every other system\'s) again')
  clock.advance(301_000) // NEGATIVE_CACHE_SECONDS
  mock.clearFaults()
  mock.revokeTokens(APP_ID)
  const recovered = await post<TicketData>(app, TICKET, body)
  t.equal(recovered.body.statusCode, 200, 'once the refusal is forgotten, a refused token is replaced again')
  t.equal(mock.issued(APP_ID), 3)
})

t.test('stable mode: a refused token is replaced by asking WeChat for its current one, never by a forced refresh', async (t) => {
  for (const route of [TICKET, '/api/v3/get-wechat-miniprogram-phone']) {
    t.test(route, async (t) => {
      const { mock, url } = await startMock(t)
      const clock = new TestClock()
      const { app } = await build(t, {
        upstream: url,
        clock,
        env: { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), WECHAT_IDENTIFIERS: '{"my-wxapp":"wx0123456789abcdef"}', HOT_CACHE_MS: '0', SCHEDULER_INTERVAL_SECONDS: '0' }
      })
      const payload = (i: number) => route === TICKET ? body : { code: `junk-${i}`, extIdpConnidentifier: 'my-wxapp' }
      // Another system forced a new stable token: a normal stable_token call answers it, and both systems keep working.
      const first = (await post(app, TOKEN, body)).body.data!.accessToken
      mock.revokeTokens(APP_ID)
      const recovered = await post(app, route, route === TICKET ? body : { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: 'my-wxapp' })
      t.equal(recovered.body.statusCode, 200, recovered.body.message)
      t.not((await post(app, TOKEN, body)).body.data?.accessToken, first)
      // A refusal that persists (say WeChat refuses the call whatever the token): requests from anyone, 31 s apart.
      mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: route === TICKET ? 'getticket' : 'getuserphonenumber' })
      await app.store.delete(APP_ID, 'jsapi_ticket')
      for (let i = 0; i < 25; i++) {
        t.equal((await post(app, route, payload(i))).body.apiCode, 3011)
        if (route === TICKET) await app.store.delete(APP_ID, 'jsapi_ticket')
        clock.advance(31_000)
        mock.advance(31_000)
      }
      t.equal(mock.forcedCalls(APP_ID), 0, 'no forced refresh spent')
      mock.clearFaults()
      const current = (await post(app, TOKEN, body)).body.data!.accessToken
      mock.revokeTokens(APP_ID)
      const owner = await post(app, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: current })
      t.equal(owner.body.statusCode, 200, 'the owner\'s own forced refresh is still there')
      t.equal(mock.forcedCalls(APP_ID), 1)
    })
  }
})

t.test('the ticket budget, remembered refusals, and stale-if-error', async (t) => {
  t.test('TICKET_DAILY_BUDGET: apiCode 4006 past it, no call', async (t) => {
    const { mock, url } = await startMock(t)
    const { app } = await build(t, { upstream: url, env: { TICKET_DAILY_BUDGET: '1', HOT_CACHE_MS: '0' } })
    t.equal((await post(app, TICKET, body)).body.statusCode, 200)
    await app.store.delete(APP_ID, 'jsapi_ticket')
    const refused = await post(app, TICKET, body)
    t.equal(refused.body.apiCode, 4006, refused.body.message)
    t.equal(mock.calls('getticket'), 1)
    t.equal((await post(app, TICKET, { ...body, type: 'wx_card' })).body.statusCode, 200, 'each type has its own budget')
    t.equal((await post(app, TOKEN, body)).body.statusCode, 200, 'tokens are not affected')
  })

  t.test('45009 from getticket is remembered: WeChat is not asked again for a while', async (t) => {
    const { mock, url } = await startMock(t)
    const { app } = await build(t, { upstream: url })
    mock.inject({ fault: { kind: 'errcode', errcode: 45009 }, endpoint: 'getticket', times: 1 })
    t.equal((await post(app, TICKET, body)).body.apiCode, 3005)
    t.equal((await post(app, TICKET, body)).body.apiCode, 3005)
    t.equal(mock.calls('getticket'), 1)
    t.equal((await post(app, TICKET, { ...body, type: 'wx_card' })).body.statusCode, 200, 'the other type is asked')
    t.equal((await post(app, TOKEN, body)).body.statusCode, 200, 'and tokens are served')
  })

  t.test('a failed refresh serves the stored ticket while it lasts; a due one is refreshed ahead', async (t) => {
    const { mock, url } = await startMock(t)
    const clock = new TestClock()
    const { app } = await build(t, { upstream: url, clock, env: { HOT_CACHE_MS: '0' } })
    const first = (await post<TicketData>(app, TICKET, body)).body.data!.ticket
    clock.advance(7200_000 - 5 * MINUTE) // within the refresh-ahead window (600 s)
    mock.advance(7200_000 - 5 * MINUTE)
    t.equal((await post<TicketData>(app, TICKET, body)).body.data?.ticket, first, 'the current ticket at once')
    // The stand-in counts the getticket before the service has stored its answer: wait for what is asserted, the new ticket stored.
    t.ok(await until(async () => ![undefined, first].includes((await app.store.get(APP_ID, 'jsapi_ticket'))?.accessToken)), 'a new ticket is stored')
    const second = (await post<TicketData>(app, TICKET, body)).body.data!.ticket
    t.not(second, first, 'refreshed in the background')
    t.equal(mock.calls('getticket'), 2)
    clock.advance(7200_000 - MINUTE) // past the serving margin (120 s) of the second ticket
    mock.advance(7200_000 - MINUTE)
    mock.inject({ fault: { kind: 'http', status: 502 }, endpoint: 'getticket' })
    const stale = await post<TicketData>(app, TICKET, body)
    t.equal(stale.body.data?.ticket, second, 'the stored ticket while it lasts')
  })
})

t.test('in Redis: a ticket lives under its own slot with its real expiry, and never in a key name', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [a], env } = await fleet(t, 1, url)
  const ticket = (await post<TicketData>(a!, TICKET, body)).body.data!.ticket
  const c = redis.client()
  t.teardown(() => c.disconnect())
  const keys = await c.keys(`${env.REDIS_KEY_PREFIX}:*`)
  t.ok(keys.includes(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:jsapi_ticket`), keys.join(' '))
  t.ok(keys.includes(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:jsapi_ticket:generation`))
  t.ok(keys.includes(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:token`), 'beside the token, whose keys keep their names')
  const ttl = await c.pttl(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:jsapi_ticket`)
  t.ok(ttl > 7100_000 && ttl <= 7200_000, `TTL is the ticket's expiry: ${ttl}`)
  for (const key of keys) {
    for (const secret of [APP_SECRET, ticket, ...mock.issuedTokens()]) t.notOk(key.includes(secret), 'no secret, token or ticket in a key name')
  }
  const metrics = (await a!.inject({ method: 'GET', url: '/metrics' })).body
  t.notOk(metrics.includes(ticket), 'nor in a metric')
  t.match(metrics, /wxtoken_cache_lookups_total\{credential="jsapi_ticket",layer="store",result="miss"\} 1/)
  t.match(metrics, new RegExp(`wxtoken_upstream_quota_used\\{app_id="${APP_ID}",credential="jsapi_ticket"\\} 1`))
  t.match(metrics, /wxtoken_upstream_calls_total\{endpoint="getticket",errcode="0"\} 1/)
  t.match(metrics, new RegExp(`wxtoken_token_seconds_left\\{app_id="${APP_ID}",credential="jsapi_ticket"\\} 7\\d{3}`))
})

t.test('after a flush, an instance puts its copy of the ticket back instead of fetching a new one', async (t) => {
  const { mock, url } = await startMock(t)
  const { apps: [a, b], env } = await fleet(t, 2, url, { HOT_CACHE_MS: '0' })
  const ticket = (await post<TicketData>(a!, TICKET, body)).body.data!.ticket
  t.equal((await post<TicketData>(b!, TICKET, body)).body.data?.ticket, ticket)
  const c = redis.client()
  t.teardown(() => c.disconnect())
  for (const key of await c.keys(`${env.REDIS_KEY_PREFIX}:*`)) await c.del(key)
  const after = await post<TicketData>(b!, TICKET, body)
  t.equal(after.body.data?.ticket, ticket, 'the same ticket')
  t.equal(mock.calls('getticket'), 1, 'no new getticket')
  t.equal((await post<TicketData>(a!, TICKET, body)).body.data?.ticket, ticket, 'the other instance reads it back from the store')
})

t.test('the scheduler keeps the tickets a configured app uses fresh, and fetches none it never used', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { app } = await build(t, {
    upstream: url,
    clock,
    env: { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '1', HOT_CACHE_MS: '0' }
  })
  const first = (await post<TicketData>(app, TICKET, body)).body.data!.ticket
  clock.advance(7200_000 - 5 * MINUTE)
  mock.advance(7200_000 - 5 * MINUTE)
  t.ok(await until(async () => ![undefined, first].includes((await app.store.get(APP_ID, 'jsapi_ticket'))?.accessToken)), 'a new ticket is stored before anyone asked')
  t.equal(mock.calls('getticket'), 2, 'the jsapi ticket was refreshed once')
  t.equal(await app.store.get(APP_ID, 'wx_card_ticket'), null, 'no card ticket was fetched')
})

t.test('after a flush, a copy is never put back over a ticket another instance is fetching', async (t) => {
  for (const lapse of [false, true]) {
    t.test(lapse ? 'the fetcher\'s lease lapsed: its write replaces the copy put back meanwhile' : 'the copy waits for the fetcher\'s lock', async (t) => {
      const { mock, url } = await startMock(t)
      const clock = new TestClock()
      const { apps: [a, b], env } = await fleet(t, 2, url, { HOT_CACHE_MS: '0' }, clock)
      const old = (await post<TicketData>(a!, TICKET, body)).body.data!.ticket // A holds a copy; B never served the app
      const c = redis.client()
      t.teardown(() => c.disconnect())
      for (const key of await c.keys(`${env.REDIS_KEY_PREFIX}:*`)) await c.del(key)
      mock.inject({ fault: { kind: 'latency', ms: 400 }, endpoint: 'getticket', times: 1 })
      const onB = post<TicketData>(b!, TICKET, body) // B fetches a new ticket, which retires the old one at WeChat
      for (let i = 0; i < 100 && mock.calls('getticket') < 2; i++) await sleep(5)
      if (lapse) await c.del(`${env.REDIS_KEY_PREFIX}:{${APP_ID}}:jsapi_ticket:lock`)
      const onA = (await post<TicketData>(a!, TICKET, body)).body
      t.equal(onA.statusCode, 200)
      const fromB = (await onB).body.data!.ticket
      t.not(fromB, old, 'B answers the ticket it fetched')
      t.equal((await b!.store.get(APP_ID, 'jsapi_ticket'))?.accessToken, fromB, 'the store holds the new ticket, not the retired one')
      mock.advance(6 * MINUTE)
      clock.advance(6 * MINUTE)
      const later = (await post<TicketData>(a!, TICKET, body)).body.data!.ticket
      t.equal(mock.checkTicket(later), 'valid', 'six minutes later every instance serves a ticket WeChat accepts')
    })
  }
})

t.test('after the secret is rotated, the old one gets no ticket and no signature, from the store or the hot cache', async (t) => {
  for (const hot of ['0', '60000']) {
    t.test(`HOT_CACHE_MS=${hot}`, async (t) => {
      const { mock, url } = await startMock(t)
      const { apps: [a, b] } = await fleet(t, 2, url, { HOT_CACHE_MS: hot })
      const rotated = { appId: APP_ID, appSecret: OTHER_SECRET }
      const ticket = (await post<TicketData>(a!, TICKET, body)).body.data!.ticket
      t.equal((await post<TicketData>(a!, TICKET, body)).body.data?.ticket, ticket, 'served again (from the hot cache when on)')
      mock.setApp(APP_ID, OTHER_SECRET) // the owner resets the secret
      const heard = nextChange(a!.store, APP_ID, 2)
      t.equal((await post(b!, TOKEN, rotated)).body.statusCode, 200, 'the new secret owns the token (fetched on the other instance)')
      await heard // the change message reached A
      const old = await post(a!, TICKET, body)
      t.equal(old.body.apiCode, 3002, `the old secret is refused: ${old.body.message}`)
      t.equal(old.body.data, undefined)
      t.equal((await post(a!, SIGNATURE, { ...body, url: 'https://example.com/' })).body.data, undefined, 'and gets no signature')
      const fresh = await post<TicketData>(a!, TICKET, rotated)
      t.equal(fresh.body.statusCode, 200, 'the new secret gets a ticket')
      t.equal(mock.checkTicket(fresh.body.data!.ticket), 'valid')
    })
  }
})
