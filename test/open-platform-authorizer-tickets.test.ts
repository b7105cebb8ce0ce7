/**
 * The tickets and wx.config signatures of Open Platform authorizers: kept as an Official Account's are (one getticket
 * per herd over every instance, per authorizer and type), fetched with the authorizer's token by the refresh-once rule,
 * behind the component routes' caller-key rule, and refused to an account that has not authorized the component.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { TSchema } from '@sinclair/typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import { SignatureDataSchema, TicketDataSchema } from '../src/schemas/credentials.js'
import { envelopeOf } from '../src/schemas/token.js'
import { CALLER_KEYS, COMPONENT, TestClock, post, startOpenPlatformMock, type LogCapture } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { until } from './helpers/until.js'
import { refreshTokenCount } from './helpers/open-platform.js'
import type { MockOpenPlatform } from '../src/stand-in/open-platform.js'
import type { MockWechat } from '../src/stand-in/wechat.js'

const TICKET = '/api/v3/get-authorizer-jsapi-ticket'
const SIGNATURE = '/api/v3/get-authorizer-jssdk-signature'
const TOKEN = '/api/v3/get-authorizer-access-token'
const KEY = CALLER_KEYS[0]!
const auth = { authorization: `Bearer ${KEY}` }
const on = { WECHAT_COMPONENTS: JSON.stringify([COMPONENT]), AUTH_TOKENS: CALLER_KEYS.join(','), SCHEDULER_INTERVAL_SECONDS: '0' }
const C = COMPONENT.appId
const authorizer = (i: number): string => `wx${(0xb0000000 + i).toString(16).padStart(16, '0')}`
const A = authorizer(1)
const B = authorizer(2)
const PAGE = 'https://shop.example.com/cart?item=1&from=[a]|b#/checkout?x=1'

interface TicketData { ticket: string, expiresAt: string, expiresIn: number }
interface SignatureData { appId: string, timestamp: number, nonceStr: string, signature: string }

const { fleet } = await fleetRedis(t)

const ticketOf = async (app: FastifyInstance, authorizerAppId = A, type?: 'jsapi' | 'wx_card', headers: Record<string, string> = auth) =>
  await post<TicketData>(app, TICKET, { componentAppId: C, authorizerAppId, ...(type ? { type } : {}) }, headers)
const signatureOf = async (app: FastifyInstance, authorizerAppId = A, url = PAGE, headers: Record<string, string> = auth) =>
  await post<SignatureData>(app, SIGNATURE, { componentAppId: C, authorizerAppId, url }, headers)
const tokenOf = async (app: FastifyInstance, authorizerAppId = A) =>
  await post(app, TOKEN, { componentAppId: C, authorizerAppId }, auth)
/**
 * A fleet on the test file's Redis with the Open Platform's stand-in, its callback on the first instance, a verify
 * ticket pushed, and each account authorized by the pushed `authorized` event (its refresh token and token kept).
 */
async function authorized (t: Test, n: number, appIds: string[], env: Record<string, string> = {}, clock?: TestClock) {
  const { platform, mock, url } = await startOpenPlatformMock(t)
  const { apps, instances } = await fleet(t, n, url, { ...on, ...env }, clock)
  platform.setCallback(C, `http://127.0.0.1:${await listen(apps[0]!)}/wechat/components/${C}/events`)
  t.ok(await platform.pushTicket(C), 'a verify ticket was pushed')
  for (const appId of appIds) t.ok(await platform.pushEvent(C, 'authorized', appId), `${appId} authorized`)
  t.ok(await until(async () => await refreshTokenCount(apps[0]!, 'authorized') === appIds.length, 10_000), 'the authorizations were exchanged')
  return { platform, mock, url, apps, logs: instances.map((i) => i.logs) }
}

/** No ticket, token, refresh token, code or key of either stand-in in any log line. */
function noSecretsLogged (t: Test, logs: LogCapture[], platform: MockOpenPlatform, mock: MockWechat): void {
  const text = logs.map((l) => l.text).join('\n')
  const secrets = [...platform.secrets(), ...mock.issuedTickets(), ...mock.issuedTokens()]
  t.ok(secrets.length > 0)
  t.same(secrets.filter((secret) => text.includes(secret)), [], 'no ticket, token or key in the logs')
}

t.test('300 concurrent cold ticket and signature requests over 3 instances: one getticket, with the authorizer\'s token', async (t) => {
  const { platform, mock, apps, logs } = await authorized(t, 3, [A])
  mock.inject({ fault: { kind: 'latency', ms: 200 }, endpoint: 'getticket' })
  const answers = await Promise.all(Array.from({ length: 300 }, async (_, i) =>
    (i % 2 === 0 ? await ticketOf(apps[i % 3]!) : await signatureOf(apps[i % 3]!)).body))
  t.ok(answers.every((a) => a.statusCode === 200), JSON.stringify(answers.find((a) => a.statusCode !== 200)))
  const tickets = new Set(answers.filter((_, i) => i % 2 === 0).map((a) => (a.data as TicketData).ticket))
  t.equal(tickets.size, 1, 'one ticket for all')
  const ticket = [...tickets][0]!
  t.equal(mock.checkTicket(ticket), 'valid', 'WeChat issued it')
  t.equal(mock.calls('getticket'), 1, 'one getticket')
  t.equal(mock.calls('getticket', A), 1, 'made with the authorizer\'s token')
  t.equal(platform.calls('api_authorizer_token'), 0, 'with the token the authorization gave: no token fetch')
  const signatures = answers.filter((_, i) => i % 2 === 1).map((a) => a.data as SignatureData)
  t.ok(signatures.every((s) => s.appId === A), 'every signature for the authorizer')
  const { nonceStr, timestamp, signature } = signatures[0]!
  t.equal(signature, createHash('sha1').update(`jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=${PAGE.slice(0, PAGE.indexOf('#'))}`).digest('hex'),
    'signed with that ticket')
  t.equal(platform.calls('api_authorizer_token') + mock.calls('stable_token') + mock.calls('token'), 0, 'no token of any kind was fetched')
  noSecretsLogged(t, logs, platform, mock)
})

t.test('a signature ready for wx.config, for the authorizer\'s appId; each authorizer and type its own ticket', async (t) => {
  const clock = new TestClock()
  const { mock, apps: [app] } = await authorized(t, 1, [A, B], {}, clock)
  const answers = []
  for (let i = 0; i < 3; i++) answers.push((await signatureOf(app!)).body)
  const ticket = (await ticketOf(app!)).body.data!.ticket
  t.equal(mock.calls('getticket', A), 1, 'the signatures and the ticket route share one ticket')
  for (const answer of answers) {
    t.equal(answer.statusCode, 200, answer.message)
    const { appId, timestamp, nonceStr, signature } = answer.data!
    t.equal(appId, A, 'the authorizer\'s appId, not the component\'s')
    t.ok(Math.abs(timestamp - Math.floor(clock.now() / 1000)) <= 2, 'timestamp: now, in seconds')
    t.match(nonceStr, /^[A-Za-z0-9]{16}$/)
    const expected = createHash('sha1')
      .update(`jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=https://shop.example.com/cart?item=1&from=[a]|b`)
      .digest('hex')
    t.equal(signature, expected, 'SHA-1 of the documented string: the url without its fragment, unescaped')
  }
  t.equal(new Set(answers.map((a) => a.data!.nonceStr)).size, 3, 'a new nonce per call')

  const other = await signatureOf(app!, B)
  t.equal(other.body.data?.appId, B)
  const otherTicket = (await ticketOf(app!, B)).body.data!.ticket
  t.not(otherTicket, ticket, 'another authorizer, another ticket')
  t.equal(mock.calls('getticket', B), 1, 'fetched with B\'s token')
  const card = await ticketOf(app!, A, 'wx_card')
  t.equal(card.body.statusCode, 200, card.body.message)
  t.not(card.body.data!.ticket, ticket, 'the card ticket is another')
  t.equal(mock.checkTicket(card.body.data!.ticket), 'valid')
  t.equal(mock.calls('getticket', A), 2)
  t.match(card.body.data!.expiresAt, /^\d{10}$/, 'expiresAt: Unix seconds as a string, as the Official Account route')
  t.ok(card.body.data!.expiresIn > 7100 && card.body.data!.expiresIn <= 7200)

  const bad: Array<[string, Record<string, unknown>]> = [
    [TICKET, { componentAppId: C, authorizerAppId: A, type: 'card' }],
    [TICKET, { componentAppId: C }],
    [SIGNATURE, { componentAppId: C, authorizerAppId: A }],
    [SIGNATURE, { componentAppId: C, authorizerAppId: A, url: 'javascript:alert(1)' }],
    [SIGNATURE, { componentAppId: C, authorizerAppId: A, url: 'https://' }]
  ]
  for (const [route, body] of bad) t.equal((await post(app!, route, body, auth)).body.apiCode, 1002, `${route} ${JSON.stringify(body)}`)
  t.equal(mock.calls('getticket'), 3, 'nothing more reached WeChat')
})

t.test('a token WeChat refuses at getticket is replaced once, with the refresh token, and the ticket fetched', async (t) => {
  const { platform, mock, apps: [a, b], logs } = await authorized(t, 2, [A], { HOT_CACHE_MS: '60000' })
  const token = (await tokenOf(a!)).body.data!.accessToken
  // Another system refreshed the authorizer's token: WeChat no longer knows this one (40001).
  mock.endAdoptedToken(token)
  t.equal(mock.check(token), 'invalid')
  const answer = await ticketOf(b!)
  t.equal(answer.body.statusCode, 200, answer.body.message)
  t.equal(mock.checkTicket(answer.body.data!.ticket), 'valid')
  t.equal(mock.calls('getticket'), 2, 'refused once, then fetched')
  t.equal(mock.calls('getticket', A), 1, 'the second with a token WeChat knows as the authorizer\'s')
  t.equal(platform.calls('api_authorizer_token'), 1, 'the token replaced once')
  const now = (await tokenOf(a!)).body.data!.accessToken
  t.not(now, token, 'every instance serves the new token')
  t.equal(platform.checkAuthorizerToken(now), 'valid')
  t.equal(mock.check(now), 'valid')
  t.equal((await signatureOf(a!)).body.statusCode, 200)
  t.equal(mock.calls('getticket'), 2, 'the other instance signs with the same ticket')
  noSecretsLogged(t, logs, platform, mock)
})

t.test('a token refused again after its replacement: apiCode 3011, no loop, and no new replacement for a while', async (t) => {
  const clock = new TestClock()
  const { platform, mock, apps: [app] } = await authorized(t, 1, [A], { HOT_CACHE_MS: '0' }, clock)
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: 'getticket' })
  const answer = await ticketOf(app!)
  t.equal(answer.body.apiCode, 3011, answer.body.message)
  t.equal(mock.calls('getticket'), 2, 'the first call and one retry')
  t.equal(platform.calls('api_authorizer_token'), 1, 'the token replaced once')
  for (let i = 0; i < 10; i++) t.equal((i % 2 === 0 ? await signatureOf(app!) : await ticketOf(app!)).body.apiCode, 3011)
  t.equal(mock.calls('getticket'), 12, 'each later request calls once')
  t.equal(platform.calls('api_authorizer_token'), 1, 'and does not replace the token again')
  clock.advance(301_000) // NEGATIVE_CACHE_SECONDS
  mock.clearFaults()
  const recovered = await ticketOf(app!)
  t.equal(recovered.body.statusCode, 200, recovered.body.message)
  t.equal(mock.checkTicket(recovered.body.data!.ticket), 'valid')
})

t.test('an account that has not authorized the component: 4010, no getticket, no ticket lock; unauthorized ends its tickets', async (t) => {
  const { platform, mock, apps: [a, b] } = await authorized(t, 2, [A], { HOT_CACHE_MS: '0' })
  const stranger = authorizer(999)
  t.equal((await ticketOf(a!, stranger)).body.apiCode, 4010)
  t.equal((await signatureOf(b!, stranger)).body.apiCode, 4010)
  t.equal((await ticketOf(b!, stranger, 'wx_card')).body.apiCode, 4010)
  t.equal(mock.calls('getticket'), 0, 'WeChat was never asked for a ticket')
  const space = `_authorizer:${C}:${stranger}`
  t.equal(await a!.store.getValue(space, 'authorizer_jsapi_ticket:lock'), null, 'no ticket lock was taken')

  t.equal((await ticketOf(a!)).body.statusCode, 200)
  t.equal((await ticketOf(a!, A, 'wx_card')).body.statusCode, 200)
  t.ok(await a!.store.get(`_authorizer:${C}:${A}`, 'authorizer_jsapi_ticket'), 'kept under the authorizer\'s space')
  t.equal(await platform.unauthorize(C, A), true, 'the unauthorized event was taken')
  t.ok(await until(async () => await refreshTokenCount(a!, 'removed') === 1), 'removed')
  t.equal(await a!.store.get(`_authorizer:${C}:${A}`, 'authorizer_jsapi_ticket'), null, 'its tickets removed from the store')
  t.equal(await a!.store.get(`_authorizer:${C}:${A}`, 'authorizer_wx_card_ticket'), null)
  for (const app of [a!, b!]) {
    t.equal((await ticketOf(app)).body.apiCode, 4010, 'no ticket for an ended authorization')
    t.equal((await signatureOf(app)).body.apiCode, 4010, 'nor a signature')
  }
  t.equal(mock.calls('getticket'), 2)
})

t.test('TICKET_DAILY_BUDGET counts per authorizer and type', async (t) => {
  const { mock, apps: [app] } = await authorized(t, 1, [A, B], { TICKET_DAILY_BUDGET: '1', HOT_CACHE_MS: '0' })
  t.equal((await ticketOf(app!)).body.statusCode, 200)
  await app!.store.delete(`_authorizer:${C}:${A}`, 'authorizer_jsapi_ticket')
  const refused = await ticketOf(app!)
  t.equal(refused.body.apiCode, 4006, refused.body.message)
  t.equal(mock.calls('getticket'), 1, 'refused here, not sent')
  t.equal((await ticketOf(app!, A, 'wx_card')).body.statusCode, 200, 'the other type has its own budget')
  t.equal((await ticketOf(app!, B)).body.statusCode, 200, 'another authorizer has its own budget')
  t.equal((await tokenOf(app!)).body.statusCode, 200, 'the authorizer\'s token is not affected')
})

t.test('the caller-key rule of the component routes', async (t) => {
  const { platform, url } = await startOpenPlatformMock(t)
  // Three deployments' settings over one store: the authorization taken by one is served by the others.
  const shared = { WECHAT_COMPONENTS: JSON.stringify([COMPONENT]), SCHEDULER_INTERVAL_SECONDS: '0', REDIS_KEY_PREFIX: 'caller-keys' }
  const { apps: [closed] } = await fleet(t, 1, url, shared)
  const { apps: [open] } = await fleet(t, 1, url, { ...shared, COMPONENT_ROUTES_WITHOUT_KEYS: 'true' })
  const { apps: [keyed] } = await fleet(t, 1, url, { ...on, ...shared })
  platform.setCallback(C, `http://127.0.0.1:${await listen(open!)}/wechat/components/${C}/events`)
  await platform.pushTicket(C)
  const code = platform.authorize(C, A)
  t.equal((await post(open!, '/api/v3/exchange-authorization-code', { componentAppId: C, authorizationCode: code })).body.statusCode, 200)
  for (const headers of [{}, auth]) {
    t.equal((await ticketOf(closed!, A, undefined, headers)).body.apiCode, 2003, 'no AUTH_TOKENS: refused')
    t.equal((await signatureOf(closed!, A, PAGE, headers)).body.apiCode, 2003)
  }
  t.equal((await ticketOf(open!, A, undefined, {})).body.statusCode, 200, 'opted out: served')
  t.equal((await signatureOf(open!, A, PAGE, {})).body.statusCode, 200)
  t.equal((await ticketOf(keyed!, A, undefined, {})).body.apiCode, 2003, 'AUTH_TOKENS set: a key is needed')
  t.equal((await signatureOf(keyed!, A, PAGE, { authorization: 'Bearer not-a-key' })).body.apiCode, 2003)
  t.equal((await ticketOf(keyed!)).body.statusCode, 200, 'with a key: served')
  t.equal((await signatureOf(keyed!)).body.statusCode, 200)
  const stranger = await post(keyed!, TICKET, { componentAppId: 'wx0000000000000bad', authorizerAppId: A }, auth)
  t.equal(stranger.body.apiCode, 2002, 'a component not configured')
})

t.test('the ticket and signature answers, from the store and from the hot cache, are byte for byte what the routes\' serializers make', async (t) => {
  const at = Date.now()
  // A clock that stands still: the seconds left are the same in every answer.
  const clock = Object.assign(new TestClock(), { now: () => at })
  const { apps: [app] } = await authorized(t, 1, [A], { HOT_CACHE_MS: '60000' }, clock)
  t.ok(await until(() => app!.store.pubsubUp), 'change messages reach it (the hot cache needs them)')
  const ask = async (url: string, payload: unknown) => await app!.inject({
    method: 'POST', url, headers: { ...auth, 'content-type': 'application/json', 'x-request-id': 'same-request-id' }, payload: JSON.stringify(payload)
  })
  const cases: Array<[string, string, unknown, TSchema]> = [
    ['ticket', TICKET, { componentAppId: C, authorizerAppId: A }, envelopeOf(TicketDataSchema)],
    ['signature', SIGNATURE, { componentAppId: C, authorizerAppId: A, url: PAGE }, envelopeOf(SignatureDataSchema)]
  ]
  for (const [name, url, payload, schema] of cases) {
    for (const from of ['store (or WeChat)', 'hot cache']) {
      const res = await ask(url, payload)
      t.equal(res.statusCode, 200, `${name} from the ${from}`)
      const plain = Fastify()
      plain.get('/', { schema: { response: { 200: schema } } }, async () => JSON.parse(res.payload) as unknown)
      const expected = await plain.inject({ method: 'GET', url: '/' })
      await plain.close()
      t.equal(res.payload, expected.payload, `${name} from the ${from}: what the serializer makes of the same answer`)
      t.equal(res.headers['content-type'], expected.headers['content-type'], `${name} from the ${from}: the serializer's content-type`)
    }
  }
})
