/**
 * The Open Platform stand-in: its pushes, read by a callback of the test's that checks each with checkPush and with
 * wechat-crypto (an independent WXBizMsgCrypt), and its component endpoints with their errcodes.
 */
import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import WXBizMsgCrypt from 'wechat-crypto'
import { componentCrypto } from '../src/open-platform/msg-crypto.js'
import { checkPush, type PushEvent } from '../src/open-platform/push.js'
import { MockOpenPlatform, type MockComponent, type MockOpenPlatformOptions } from '../src/stand-in/open-platform.js'
import { MockWechat } from '../src/stand-in/wechat.js'
import { until } from './helpers/until.js'

const COMPONENT: MockComponent = {
  appId: 'wxc0c0c0c0c0c0c0c0',
  appSecret: 'componentSecret0123456789abcdef01',
  token: 'componentPushToken42',
  encodingAESKey: 'k7Qz3VbN9pLm2XcR8sTy4WdF6hJa1GeU5oIi0KuYtEr'
}
const OTHER: MockComponent = {
  appId: 'wxd1d1d1d1d1d1d1d1',
  appSecret: 'otherComponentSecret9876543210fe',
  token: 'otherPushToken7',
  encodingAESKey: 'Pq8Wn3Lz6Xv1Bc4Ty7Ms2Hd5Fg9Jk0Ra3Ue6Io8Yp1Q'
}
const AUTHORIZER = 'wxa0a0a0a0a0a0a0a0'
const authorizerId = (n: number) => `wx${n.toString(16).padStart(16, '0')}`
const GRACE_MS = 5 * 60 * 1000
const HOUR_MS = 3600 * 1000
/** WeChat's errmsg: a message, then the rid. */
const ERRMSG = /^[a-z_ ,.0-9:]+ rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$/

interface Teardown { teardown: (fn: () => unknown) => void }

interface Received {
  componentAppId: string
  query: URLSearchParams
  /** What checkPush read, or why it refused. */
  event?: PushEvent
  refused?: string
  /** What wechat-crypto decrypted, and whether its signature matched msg_signature. */
  theirs?: { message: string, id: string }
  theirSignatureMatches: boolean
  /** Whether `signature` is sha1 of the sorted token, timestamp and nonce. */
  plainSignatureMatches: boolean
}

/** A component's push callback, as the service would have one: at /wechat/components/{appId}/events. */
async function startReceiver (t: Teardown, components: MockComponent[] = [COMPONENT, OTHER]) {
  const received: Received[] = []
  const state = { answer: 'success' }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://receiver')
      const appId = /^\/wechat\/components\/(wx[0-9a-f]{16})\/events$/.exec(url.pathname)?.[1]
      const config = components.find((component) => component.appId === appId)
      if (!config || req.method !== 'POST') {
        res.writeHead(404).end()
        return
      }
      const body = Buffer.concat(chunks).toString('utf8')
      const query = url.searchParams
      const entry: Received = { componentAppId: config.appId, query, theirSignatureMatches: false, plainSignatureMatches: false }
      try {
        entry.event = checkPush({ query: Object.fromEntries(query), body, component: componentCrypto(config), now: Date.now() }).event
      } catch (error) {
        entry.refused = (error as Error).message
      }
      const encrypt = /<Encrypt><!\[CDATA\[([^\]]+)\]\]><\/Encrypt>/.exec(body)?.[1] ?? ''
      const theirs = new WXBizMsgCrypt(config.token, config.encodingAESKey, config.appId)
      entry.theirSignatureMatches = theirs.getSignature(query.get('timestamp') ?? '', query.get('nonce') ?? '', encrypt) === query.get('msg_signature')
      try {
        entry.theirs = theirs.decrypt(encrypt)
      } catch {}
      entry.plainSignatureMatches = hash('sha1', [config.token, query.get('timestamp') ?? '', query.get('nonce') ?? ''].sort().join(''), 'hex') === query.get('signature')
      received.push(entry)
      res.writeHead(200, { 'content-type': 'text/plain' }).end(state.answer)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { received, state, callbackOf: (appId: string) => `${base}/wechat/components/${appId}/events` }
}

/** The stand-in with both components, their callbacks set to a receiver. */
async function start (t: Teardown, options: MockOpenPlatformOptions = {}) {
  const mock = new MockOpenPlatform({ components: [COMPONENT, OTHER], ...options })
  const url = await mock.start()
  t.teardown(() => mock.close())
  const receiver = await startReceiver(t)
  mock.setCallback(COMPONENT.appId, receiver.callbackOf(COMPONENT.appId))
  mock.setCallback(OTHER.appId, receiver.callbackOf(OTHER.appId))
  const call = async (endpoint: string, body: unknown, token?: string, method: 'GET' | 'POST' = 'POST') => {
    const query = token === undefined ? '' : `?component_access_token=${encodeURIComponent(token)}`
    const res = await request(`${url}/cgi-bin/component/${endpoint}${query}`, {
      method,
      ...(method === 'POST' ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {})
    })
    if (res.headers['content-type'] !== 'application/json; encoding=utf-8') throw new Error('WeChat answers application/json; encoding=utf-8')
    return await res.body.json() as Record<string, unknown>
  }
  const componentToken = async (ticket: string | undefined, component = COMPONENT) => await call('api_component_token', {
    component_appid: component.appId, component_appsecret: component.appSecret, component_verify_ticket: ticket
  })
  /** A fresh ticket pushed, and a component token fetched with it. */
  const tokenFor = async (component = COMPONENT) => {
    await mock.pushTicket(component.appId)
    return (await componentToken(mock.latestTicket(component.appId), component)).component_access_token as string
  }
  return { mock, url, call, componentToken, tokenFor, ...receiver }
}

function ticketOf (entry: Received | undefined): string | undefined {
  return entry?.event?.type === 'component_verify_ticket' ? entry.event.ticket : undefined
}

t.test('a ticket push: as WeChat sends it, checked by checkPush and by wechat-crypto; the answer is recorded', async (t) => {
  const { mock, received, state } = await start(t)
  t.equal(await mock.pushTicket(COMPONENT.appId), true, 'the callback answered success')
  t.equal(received.length, 1)
  const [push] = received
  t.equal(push?.refused, undefined, 'checkPush takes it')
  t.equal(push?.event?.type, 'component_verify_ticket')
  t.equal(push?.event?.appId, COMPONENT.appId)
  t.equal(ticketOf(push), mock.latestTicket(COMPONENT.appId))
  t.ok(push?.theirSignatureMatches, 'wechat-crypto computes the same msg_signature')
  t.equal(push?.theirs?.id, COMPONENT.appId, 'wechat-crypto decrypts it, for this component')
  t.match(push?.theirs?.message, new RegExp(`^<xml><AppId><!\\[CDATA\\[${COMPONENT.appId}\\]\\]></AppId><CreateTime>\\d{10}</CreateTime>` +
    '<InfoType><!\\[CDATA\\[component_verify_ticket\\]\\]></InfoType><ComponentVerifyTicket><!\\[CDATA\\[ticket@@@[A-Za-z0-9_-]+\\]\\]></ComponentVerifyTicket></xml>$'))
  t.ok(push?.plainSignatureMatches, 'signature: sha1 of the sorted token, timestamp and nonce')
  t.equal(push?.query.get('encrypt_type'), 'aes')
  t.match(push?.query.get('nonce'), /^\d+$/)
  t.same(mock.pushes(), [{ componentAppId: COMPONENT.appId, infoType: 'component_verify_ticket', ticket: ticketOf(push), status: 200, answer: 'success', accepted: true }])

  state.answer = 'fail'
  t.equal(await mock.pushTicket(COMPONENT.appId), false, 'anything but success is not taken')
  t.equal(mock.pushes().at(-1)?.answer, 'fail')
  t.equal(mock.pushes().at(-1)?.accepted, false)
  t.equal(mock.checkTicket(ticketOf(received[1]) ?? ''), 'valid', 'the ticket is valid whether or not the callback took it')

  await mock.pushTicket(OTHER.appId)
  t.equal(received.at(-1)?.event?.appId, OTHER.appId, 'each component\'s push under its own key and token')
  t.equal(received.at(-1)?.refused, undefined)
  t.equal(mock.pushes(OTHER.appId).length, 1)
  t.equal(mock.pushes(COMPONENT.appId).length, 2)

  mock.setCallback(OTHER.appId, 'http://127.0.0.1:1/events')
  t.equal(await mock.pushTicket(OTHER.appId), false)
  t.equal(mock.pushes(OTHER.appId).at(-1)?.error, 'ECONNREFUSED', 'a callback that does not answer')
  t.same(mock.issuedTickets(), received.map(ticketOf).concat(mock.latestTicket(OTHER.appId)), 'every ticket minted, pushed or not')
})

t.test('tickets: valid 12 hours each, an earlier one until its own end; 61005 past it, 61006 for any other', async (t) => {
  const { mock, componentToken } = await start(t)
  await mock.pushTicket(COMPONENT.appId)
  const first = mock.latestTicket(COMPONENT.appId) as string
  t.equal(typeof (await componentToken(first)).component_access_token, 'string')
  mock.advance(6 * HOUR_MS)
  await mock.pushTicket(COMPONENT.appId)
  const second = mock.latestTicket(COMPONENT.appId) as string
  t.not(second, first)
  t.same(await componentToken(first).then((answer) => Object.keys(answer).sort()), ['component_access_token', 'expires_in'],
    'the earlier ticket still works after a new push')
  mock.advance(6 * HOUR_MS)
  t.equal(mock.checkTicket(first), 'expired')
  t.equal((await componentToken(first)).errcode, 61005, '12 hours after its push')
  t.equal(mock.checkTicket(second), 'valid')
  t.equal((await componentToken(second)).expires_in, 7200)
  mock.advance(6 * HOUR_MS)
  t.equal((await componentToken(second)).errcode, 61005)
  t.equal((await componentToken('ticket@@@not-one-of-ours')).errcode, 61006)
  t.equal((await componentToken(undefined)).errcode, 61006, 'no ticket')
  await mock.pushTicket(OTHER.appId)
  t.equal((await componentToken(mock.latestTicket(OTHER.appId))).errcode, 61006, 'another component\'s ticket')
})

t.test('api_component_token: its errcodes, WeChat\'s errmsg with a rid, faults by endpoint and component', async (t) => {
  const { mock, call, componentToken } = await start(t)
  await mock.pushTicket(COMPONENT.appId)
  const ticket = mock.latestTicket(COMPONENT.appId)
  const body = { component_appid: COMPONENT.appId, component_appsecret: COMPONENT.appSecret, component_verify_ticket: ticket }
  const cases: Array<[string, unknown, number]> = [
    ['no appid', { ...body, component_appid: undefined }, 41002],
    ['no secret', { ...body, component_appsecret: '' }, 41004],
    ['an unknown component', { ...body, component_appid: 'wx9999999999999999' }, 40013],
    ['a wrong secret', { ...body, component_appsecret: OTHER.appSecret }, 40125],
    ['not JSON', '{component_appid', 47001]
  ]
  for (const [what, payload, errcode] of cases) {
    const answer = await call('api_component_token', payload)
    t.equal(answer.errcode, errcode, what)
    t.match(answer.errmsg, ERRMSG, what)
    t.notOk('component_access_token' in answer)
  }
  t.equal((await call('api_component_token', undefined, undefined, 'GET')).errcode, 43002, 'GET')
  t.same(mock.issuedComponentTokens(), [])

  mock.inject({ endpoint: 'api_component_token', componentAppId: COMPONENT.appId, fault: { kind: 'errcode', errcode: 61004 }, times: 1 })
  const refused = await componentToken(ticket)
  t.equal(refused.errcode, 61004)
  t.match(refused.errmsg, /^access clientip is not registered requestIP: 127\.0\.0\.1 rid: /, 'names the caller\'s address, as WeChat')
  await mock.pushTicket(OTHER.appId)
  t.ok((await componentToken(mock.latestTicket(OTHER.appId), OTHER)).component_access_token, 'the fault is for its component only')
  t.ok((await componentToken(ticket)).component_access_token, 'and for one call')
  mock.inject({ endpoint: 'api_create_preauthcode', fault: { kind: 'errcode', errcode: 61004 } })
  t.ok((await componentToken(ticket)).component_access_token, 'a fault for another endpoint')
  t.equal(mock.calls('api_component_token'), cases.length + 5)
  t.equal(mock.calls('api_component_token', COMPONENT.appId), cases.length - 3 + 3, 'counted by the component_appid named')
  t.equal(mock.calls('api_component_token', OTHER.appId), 1)
})

t.test('component tokens: a new one retires the previous after 5 minutes (40001), 42001 past 7200 s, 41001, 61014', async (t) => {
  const { mock, call, componentToken, tokenFor } = await start(t)
  const preAuth = async (token: string | undefined, appId = COMPONENT.appId) => await call('api_create_preauthcode', { component_appid: appId }, token)
  const first = await tokenFor()
  const answer = await preAuth(first)
  t.match(answer.pre_auth_code, /^preauthcode@@@[A-Za-z0-9_-]+$/)
  t.equal(answer.expires_in, 1800)
  const second = (await componentToken(mock.latestTicket(COMPONENT.appId))).component_access_token as string
  t.not(second, first, 'each call issues a new token')
  t.equal(mock.checkComponentToken(first), 'valid', 'the previous one works during the grace')
  t.ok((await preAuth(first)).pre_auth_code)
  mock.advance(GRACE_MS)
  t.equal(mock.checkComponentToken(first), 'invalid')
  t.equal((await preAuth(first)).errcode, 40001, 'replaced: not the latest')
  t.ok((await preAuth(second)).pre_auth_code)
  mock.advance(7200 * 1000 - GRACE_MS)
  t.equal((await preAuth(second)).errcode, 42001, 'past its 7200 s')

  const third = await tokenFor()
  t.equal((await preAuth(undefined)).errcode, 41001)
  t.equal((await preAuth('61_not-a-token')).errcode, 40001)
  t.equal((await preAuth(third, OTHER.appId)).errcode, 40013, 'a token of one component with another\'s component_appid')
  const otherToken = await tokenFor(OTHER)
  t.ok((await preAuth(otherToken, OTHER.appId)).pre_auth_code)
  mock.revokeComponentTokens(COMPONENT.appId)
  t.equal((await preAuth(third)).errcode, 40001, 'revoked')
  t.ok((await preAuth(otherToken, OTHER.appId)).pre_auth_code, 'another component\'s token stays')

  const fourth = await tokenFor()
  const code = mock.authorize(COMPONENT.appId, AUTHORIZER)
  const auth = await call('api_query_auth', { component_appid: COMPONENT.appId, authorization_code: code }, fourth)
  const authorizerToken = (auth.authorization_info as Record<string, string>).authorizer_access_token as string
  t.equal((await preAuth(authorizerToken)).errcode, 61014, 'an authorizer\'s token is no component token')
  t.equal(mock.calls('api_create_preauthcode', COMPONENT.appId), 9, 'counted by the component_appid named')
  t.equal(mock.issuedPreAuthCodes().length, 6, 'five answered, one made for the authorization (the last answered had expired)')
})

t.test('an authorization: authorize, the authorized event, api_query_auth once, api_authorizer_token; valid for the WeChat API', async (t) => {
  const wechat = new MockWechat()
  const wechatUrl = await wechat.start()
  t.teardown(() => wechat.close())
  const { mock, call, tokenFor, received } = await start(t, { wechat })
  const token = await tokenFor()
  const preAuthCode = (await call('api_create_preauthcode', { component_appid: COMPONENT.appId }, token)).pre_auth_code as string
  const code = mock.authorize(COMPONENT.appId, AUTHORIZER)
  t.match(code, /^queryauthcode@@@[A-Za-z0-9_-]+$/)
  t.equal(await mock.pushEvent(COMPONENT.appId, 'authorized', AUTHORIZER), true)
  const event = received.at(-1)?.event
  t.equal(received.at(-1)?.refused, undefined)
  t.ok(received.at(-1)?.theirSignatureMatches)
  t.equal(received.at(-1)?.theirs?.id, COMPONENT.appId)
  t.match(event, { type: 'authorized', appId: COMPONENT.appId, authorizerAppId: AUTHORIZER, authorizationCode: code, preAuthCode })
  if (event?.type !== 'authorized') throw new Error('an authorized event')
  t.equal(event.authorizationCodeExpiredTime, event.createTime + 600, 'the code is valid 10 minutes')
  t.match(mock.pushes().at(-1), { infoType: 'authorized', authorizerAppId: AUTHORIZER, accepted: true })

  const query = async (authorizationCode: string) => await call('api_query_auth', { component_appid: COMPONENT.appId, authorization_code: authorizationCode }, token)
  const answer = await query(code)
  const info = answer.authorization_info as Record<string, unknown>
  t.same(Object.keys(info).sort(), ['authorizer_access_token', 'authorizer_appid', 'authorizer_refresh_token', 'expires_in', 'func_info'])
  t.equal(info.authorizer_appid, AUTHORIZER)
  t.equal(info.expires_in, 7200)
  t.equal(info.authorizer_refresh_token, mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER))
  t.match(info.authorizer_refresh_token, /^refreshtoken@@@/)
  const first = info.authorizer_access_token as string
  t.equal(mock.checkAuthorizerToken(first), 'valid')
  t.same(mock.authorizerOf(first), { componentAppId: COMPONENT.appId, authorizerAppId: AUTHORIZER })
  t.equal((await query(code)).errcode, 61009, 'a code works once')
  t.equal((await query('queryauthcode@@@unknown')).errcode, 61009)

  // The authorizer's token on the WeChat stand-in: a JS-SDK ticket with it.
  const ticketAnswer = await (await request(`${wechatUrl}/cgi-bin/ticket/getticket?access_token=${encodeURIComponent(first)}&type=jsapi`)).body.json() as Record<string, unknown>
  t.equal(ticketAnswer.errcode, 0, 'an authorizer token is good for the ordinary API')
  t.equal(wechat.check('61_unknown'), 'invalid')

  const refresh = async (refreshToken: unknown, authorizerAppId = AUTHORIZER) => await call('api_authorizer_token',
    { component_appid: COMPONENT.appId, authorizer_appid: authorizerAppId, authorizer_refresh_token: refreshToken }, token)
  const refreshed = await refresh(info.authorizer_refresh_token)
  t.same(Object.keys(refreshed).sort(), ['authorizer_access_token', 'authorizer_refresh_token', 'expires_in'])
  t.not(refreshed.authorizer_access_token, first, 'a new token')
  t.equal(refreshed.authorizer_refresh_token, info.authorizer_refresh_token, 'the same refresh token unless rotating')
  t.equal(mock.checkAuthorizerToken(first), 'valid', 'the previous token during the grace')
  mock.advance(GRACE_MS)
  wechat.advance(GRACE_MS)
  t.equal(mock.checkAuthorizerToken(first), 'invalid', 'and not after')
  t.not(wechat.check(first), 'valid', 'on the WeChat stand-in too')
  t.equal(wechat.check(refreshed.authorizer_access_token as string), 'valid')
  t.equal(mock.checkAuthorizerToken(refreshed.authorizer_access_token as string), 'valid')
  t.equal((await refresh('refreshtoken@@@unknown')).errcode, 61023)
  t.equal((await refresh(info.authorizer_refresh_token, authorizerId(9))).errcode, 61023, 'a refresh token of another authorizer')

  // Expired codes, and the updateauthorized event.
  const late = mock.authorize(COMPONENT.appId, AUTHORIZER)
  await mock.pushEvent(COMPONENT.appId, 'updateauthorized', AUTHORIZER)
  t.match(received.at(-1)?.event, { type: 'updateauthorized', authorizerAppId: AUTHORIZER, authorizationCode: late })
  t.equal(mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER), info.authorizer_refresh_token, 'a re-authorization keeps the refresh token')
  mock.advance(600 * 1000)
  t.equal((await query(late)).errcode, 61010, 'past its 10 minutes')
  t.same(mock.issuedAuthorizerTokens(), [first, refreshed.authorizer_access_token])
  t.same(mock.issuedAuthorizationCodes(), [code, late])
  t.equal(mock.calls('api_query_auth', COMPONENT.appId), 4)
})

t.test('refresh tokens rotating: each call a new one, the used one gone (61023); unauthorize ends everything', async (t) => {
  const { mock, call, tokenFor, received } = await start(t)
  const token = await tokenFor()
  const code = mock.authorize(COMPONENT.appId, AUTHORIZER)
  const info = (await call('api_query_auth', { component_appid: COMPONENT.appId, authorization_code: code }, token)).authorization_info as Record<string, string>
  const refresh = async (refreshToken: string | undefined) => await call('api_authorizer_token',
    { component_appid: COMPONENT.appId, authorizer_appid: AUTHORIZER, authorizer_refresh_token: refreshToken }, token)
  mock.rotateRefreshTokens(true)
  const r1 = info.authorizer_refresh_token as string
  const first = await refresh(r1)
  const r2 = first.authorizer_refresh_token as string
  t.not(r2, r1, 'a new refresh token')
  t.equal(mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER), r2)
  t.equal((await refresh(r1)).errcode, 61023, 'the one used is gone: a service that did not save the new one is locked out')
  const second = await refresh(r2)
  const r3 = second.authorizer_refresh_token as string
  t.not(r3, r2)
  t.equal((await refresh(r2)).errcode, 61023)
  mock.rotateRefreshTokens(false)
  t.equal((await refresh(r3)).authorizer_refresh_token, r3, 'not rotating: the same again')
  t.equal((await refresh(r3)).authorizer_refresh_token, r3)
  t.same(mock.issuedRefreshTokens(), [r1, r2, r3])

  const authorizerToken = mock.issuedAuthorizerTokens().at(-1) as string
  t.equal(mock.checkAuthorizerToken(authorizerToken), 'valid')
  t.equal(await mock.unauthorize(COMPONENT.appId, AUTHORIZER), true)
  t.match(received.at(-1)?.event, { type: 'unauthorized', appId: COMPONENT.appId, authorizerAppId: AUTHORIZER })
  t.equal(received.at(-1)?.refused, undefined)
  t.equal((await refresh(r3)).errcode, 61023, 'unauthorized: the refresh token is gone')
  t.equal(mock.checkAuthorizerToken(authorizerToken), 'invalid', 'and its tokens')
  t.equal(mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER), undefined)
  t.equal((await call('api_get_authorizer_info', { component_appid: COMPONENT.appId, authorizer_appid: AUTHORIZER }, token)).errcode, 61003)
  t.equal((await call('api_get_authorizer_list', { component_appid: COMPONENT.appId, offset: 0, count: 10 }, token)).total_count, 0)

  const again = mock.authorize(COMPONENT.appId, AUTHORIZER)
  const r4 = mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER)
  t.ok(r4)
  t.not(r4, r3, 'a new authorization, a new refresh token')
  t.equal(((await call('api_query_auth', { component_appid: COMPONENT.appId, authorization_code: again }, token)).authorization_info as Record<string, string>).authorizer_refresh_token, r4)
  t.equal(mock.calls('api_authorizer_token', COMPONENT.appId), 7)
})

t.test('api_get_authorizer_list: pages of at most 500 in authorization order, refresh tokens that work; api_get_authorizer_info', async (t) => {
  const { mock, call, tokenFor } = await start(t)
  const token = await tokenFor()
  const ids = Array.from({ length: 7 }, (_, n) => authorizerId(n + 1))
  // auth_time is in whole seconds of the stand-in's clock, which runs with the real one: start 100 ms past a second,
  // so that the few milliseconds the loop takes cannot cross one and make a step of 2.
  mock.advance(1100 - mock.now() % 1000)
  for (const id of ids) {
    mock.authorize(COMPONENT.appId, id)
    mock.advance(1000)
  }
  mock.authorize(OTHER.appId, authorizerId(100))
  const list = async (offset: unknown, count: unknown) => await call('api_get_authorizer_list', { component_appid: COMPONENT.appId, offset, count }, token)
  const pages = [await list(0, 3), await list(3, 3), await list(6, 3), await list(9, 3)]
  for (const page of pages) t.equal(page.total_count, 7)
  const listed = pages.flatMap((page) => page.list as Array<{ authorizer_appid: string, refresh_token: string, auth_time: number }>)
  t.same(pages.map((page) => (page.list as unknown[]).length), [3, 3, 1, 0])
  t.same(listed.map((entry) => entry.authorizer_appid), ids, 'each once, in the order they authorized; none of another component')
  t.same(listed.map((entry) => entry.refresh_token), ids.map((id) => mock.refreshTokenOf(COMPONENT.appId, id)))
  t.same(listed.map((entry) => entry.auth_time - (listed[0]?.auth_time ?? 0)), [0, 1, 2, 3, 4, 5, 6], 'auth_time in seconds')
  t.equal((await list(0, 500)).total_count, 7)
  for (const [offset, count] of [[0, 501], [0, 0], [-1, 10], [0, '10'], [undefined, 10]]) {
    t.equal((await list(offset, count)).errcode, 40097, `offset ${String(offset)}, count ${String(count)}`)
  }

  // A refresh token recovered from the list works.
  const recovered = listed[4] as { authorizer_appid: string, refresh_token: string }
  const answer = await call('api_authorizer_token', {
    component_appid: COMPONENT.appId, authorizer_appid: recovered.authorizer_appid, authorizer_refresh_token: recovered.refresh_token
  }, token)
  t.equal(mock.checkAuthorizerToken(answer.authorizer_access_token as string), 'valid')

  const info = await call('api_get_authorizer_info', { component_appid: COMPONENT.appId, authorizer_appid: ids[2] }, token)
  t.match(info.authorization_info, { authorizer_appid: ids[2], authorizer_refresh_token: mock.refreshTokenOf(COMPONENT.appId, ids[2] as string), func_info: [] })
  t.match(info.authorizer_info, { nick_name: String })
  t.equal((await call('api_get_authorizer_info', { component_appid: COMPONENT.appId, authorizer_appid: authorizerId(100) }, token)).errcode, 61003,
    'an authorizer of another component')
  t.equal(mock.calls('api_get_authorizer_list', COMPONENT.appId), 10)
})

t.test('api_start_push_ticket: answers ok, then pushes a ticket that works; a wrong secret pushes nothing', async (t) => {
  const { mock, call, componentToken, received } = await start(t, { startPushDelayMs: 20 })
  const wrong = await call('api_start_push_ticket', { component_appid: COMPONENT.appId, component_secret: OTHER.appSecret })
  t.equal(wrong.errcode, 40125)
  t.equal((await call('api_start_push_ticket', { component_appid: COMPONENT.appId })).errcode, 41004)
  t.same(await call('api_start_push_ticket', { component_appid: COMPONENT.appId, component_secret: COMPONENT.appSecret }), { errcode: 0, errmsg: 'ok' })
  t.ok(await until(() => received.length > 0), 'a push follows')
  t.equal(received.length, 1, 'one push: the refused calls pushed nothing (their timers would have run first)')
  const ticket = ticketOf(received[0])
  t.ok(ticket)
  t.equal(received[0]?.componentAppId, COMPONENT.appId)
  t.ok((await componentToken(ticket)).component_access_token, 'the pushed ticket gets a component token')
  t.equal(mock.calls('api_start_push_ticket', COMPONENT.appId), 3)
})

t.test('startPushing: a new ticket on each tick, until stopPushing', async (t) => {
  const { mock, received } = await start(t)
  mock.startPushing(COMPONENT.appId, 20)
  t.ok(await until(() => received.length >= 3), 'pushes on the timer')
  mock.stopPushing(COMPONENT.appId)
  const pushed = mock.pushes().length
  // An absence: waiting ten ticks cannot make this fail when stopPushing works.
  await sleep(200)
  t.equal(mock.pushes().length, pushed, 'no push after stopPushing')
  const tickets = received.map(ticketOf)
  t.equal(new Set(tickets).size, tickets.length, 'a new ticket each time')
  t.ok(tickets.every((ticket) => mock.checkTicket(ticket ?? '') === 'valid'))
  t.ok(received.every((entry) => entry.refused === undefined && entry.theirSignatureMatches && entry.plainSignatureMatches))
})

t.test('secrets(): every ticket, token, code and component setting, for the log scans', async (t) => {
  const { mock, call, tokenFor } = await start(t)
  const token = await tokenFor()
  const code = mock.authorize(COMPONENT.appId, AUTHORIZER)
  await call('api_query_auth', { component_appid: COMPONENT.appId, authorization_code: code }, token)
  const secrets = mock.secrets()
  for (const value of [
    COMPONENT.appSecret, COMPONENT.token, COMPONENT.encodingAESKey, OTHER.appSecret, token, code,
    mock.latestTicket(COMPONENT.appId), mock.refreshTokenOf(COMPONENT.appId, AUTHORIZER), ...mock.issuedAuthorizerTokens(), ...mock.issuedPreAuthCodes()
  ]) t.ok(value !== undefined && secrets.includes(value))
  t.notOk(secrets.includes(COMPONENT.appId), 'appIds are no secret')
})
