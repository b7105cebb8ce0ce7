import t from 'tap'
import { createDecipheriv, randomBytes } from 'node:crypto'
import { request } from 'undici'
import { demoSessionKey, encryptOpenData } from '../src/stand-in/wechat.js'
import { APP_ID, APP_SECRET, startMock, untilEarlyBeijingDay } from './helpers/build.js'

async function call (url: string, path: string, init: { method?: 'GET' | 'POST', body?: unknown } = {}) {
  const res = await request(`${url}${path}`, {
    method: init.method ?? 'GET',
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) })
  })
  if (res.headers['content-type'] !== 'application/json; encoding=utf-8') throw new Error('WeChat answers application/json; encoding=utf-8')
  return await res.body.json() as Record<string, unknown>
}

const classicPath = (secret = APP_SECRET, appId = APP_ID) =>
  `/cgi-bin/token?grant_type=client_credential&appid=${appId}&secret=${secret}`
const stableBody = (extra: Record<string, unknown> = {}) =>
  ({ grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET, ...extra })

t.test('classic: each fetch issues a new token and retires the previous one after five minutes', async (t) => {
  const { mock, url } = await startMock(t)
  const first = await call(url, classicPath())
  t.equal(first.expires_in, 7200)
  const second = await call(url, classicPath())
  t.not(second.access_token, first.access_token)
  t.equal(mock.check(first.access_token as string), 'valid', 'the old token still works for a while')
  mock.advance(5 * 60 * 1000 + 1000)
  t.equal(mock.check(first.access_token as string), 'expired')
  t.equal(mock.check(second.access_token as string), 'valid')
  t.equal((await call(url, `/cgi-bin/get_api_domain_ip?access_token=${first.access_token as string}`)).errcode, 42001)
  t.ok(Array.isArray((await call(url, `/cgi-bin/get_api_domain_ip?access_token=${second.access_token as string}`)).ip_list))
  t.equal((await call(url, '/cgi-bin/get_api_domain_ip?access_token=nope')).errcode, 40001)
  t.equal(mock.issued(APP_ID, 'token'), 2)
})

t.test('classic: errcodes carry a rid and the daily quota is enforced', async (t) => {
  const { mock, url } = await startMock(t, { classicDailyQuota: 2 })
  mock.advance(untilEarlyBeijingDay(mock.now()))
  const wrong = await call(url, classicPath('0'.repeat(32)))
  t.equal(wrong.errcode, 40125)
  t.match(wrong.errmsg, /rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$/)
  t.equal((await call(url, classicPath(APP_SECRET, 'wx1111111111111111'))).errcode, 40013)
  t.equal((await call(url, '/cgi-bin/token?grant_type=x')).errcode, 40002)
  t.equal((await call(url, '/cgi-bin/token?grant_type=client_credential&secret=x')).errcode, 41002)
  t.equal((await call(url, `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}`)).errcode, 41004)
  await call(url, classicPath())
  await call(url, classicPath())
  t.equal((await call(url, classicPath())).errcode, 45009)
})

t.test('stable: normal mode returns the same token; force_refresh is limited', async (t) => {
  const { mock, url } = await startMock(t, { forceRefreshDailyLimit: 2 })
  const a = await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody() })
  mock.advance(60_000)
  const b = await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody() })
  t.equal(b.access_token, a.access_token, 'idempotent')
  t.ok((b.expires_in as number) <= 7140 && (b.expires_in as number) >= 7139, 'remaining life')

  const forced = await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody({ force_refresh: true }) })
  t.not(forced.access_token, a.access_token)
  t.equal(mock.check(a.access_token as string), 'invalid', 'force_refresh invalidates the current token')
  const tooSoon = await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody({ force_refresh: true }) })
  t.equal(tooSoon.access_token, forced.access_token, 'within 30 s: no refresh')
  mock.advance(31_000)
  await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody({ force_refresh: true }) })
  mock.advance(31_000)
  t.equal((await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody({ force_refresh: true }) })).errcode, 45009, 'daily force limit')

  mock.advance(7200_000 - 5 * 60_000)
  const renewed = await call(url, '/cgi-bin/stable_token', { method: 'POST', body: stableBody() })
  t.ok((renewed.expires_in as number) > 300, 'renewed in its last five minutes')
})

t.test('stable: GET is refused with 43002, bad JSON with 47001', async (t) => {
  const { url } = await startMock(t)
  t.equal((await call(url, '/cgi-bin/stable_token')).errcode, 43002)
  t.equal((await call(url, '/cgi-bin/stable_token', { method: 'POST', body: '{nope' })).errcode, 47001)
})

t.test('autoRegister accepts any well-formed appId and remembers its secret', async (t) => {
  const { url } = await startMock(t, { apps: {}, autoRegister: true })
  const appId = 'wxabcdefabcdefabcd'
  t.type((await call(url, classicPath(APP_SECRET, appId))).access_token, 'string')
  t.equal((await call(url, classicPath('f'.repeat(32), appId))).errcode, 40125)
  t.equal((await call(url, classicPath(APP_SECRET, 'not-an-appid'))).errcode, 40013)
})

t.test('faults apply to matching requests, a given number of times', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'errcode', errcode: -1 }, endpoint: 'token', times: 1 })
  t.equal((await call(url, classicPath())).errcode, -1)
  t.type((await call(url, classicPath())).access_token, 'string')
  t.equal(mock.calls('token'), 2)
  t.equal(mock.calls('token', APP_ID), 2)
})

t.test('getticket: a ticket per type with the token; 40001 / 42001 for a bad or expired token; 40097; the quota', async (t) => {
  const { mock, url } = await startMock(t, { ticketDailyQuota: 3 })
  mock.advance(untilEarlyBeijingDay(mock.now()))
  const token = (await call(url, classicPath())).access_token as string
  const jsapi = await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=jsapi`)
  t.equal(jsapi.errcode, 0)
  t.equal(jsapi.expires_in, 7200)
  t.equal(mock.checkTicket(jsapi.ticket as string), 'valid')
  const again = await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=jsapi`)
  t.not(again.ticket, jsapi.ticket, 'each call issues a new ticket')
  mock.advance(5 * 60 * 1000 + 1000)
  t.equal(mock.checkTicket(jsapi.ticket as string), 'expired', 'the previous one lasts five more minutes')
  t.equal((await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=other`)).errcode, 40097)
  t.equal((await call(url, '/cgi-bin/ticket/getticket?access_token=nope&type=jsapi')).errcode, 40001)
  t.equal((await call(url, '/cgi-bin/ticket/getticket?type=jsapi')).errcode, 41001)
  t.equal((await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=wx_card`)).errcode, 0)
  t.equal((await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=wx_card`)).errcode, 45009, 'past the daily quota')
  mock.revokeTokens(APP_ID)
  t.equal((await call(url, `/cgi-bin/ticket/getticket?access_token=${token}&type=jsapi`)).errcode, 40001, 'a revoked token')
  const late = (await call(url, classicPath())).access_token as string
  mock.advance(7200 * 1000)
  t.equal((await call(url, `/cgi-bin/ticket/getticket?access_token=${late}&type=jsapi`)).errcode, 42001, 'an expired token')
})

t.test('getuserphonenumber: a minted code once, for its own app, for five minutes; 40029 otherwise', async (t) => {
  const { mock, url } = await startMock(t, { apps: { [APP_ID]: APP_SECRET, wx1111111111111111: APP_SECRET } })
  const token = (await call(url, classicPath())).access_token as string
  const other = (await call(url, classicPath(APP_SECRET, 'wx1111111111111111'))).access_token as string
  const path = (accessToken: string) => `/wxa/business/getuserphonenumber?access_token=${accessToken}`
  const code = mock.mintPhoneCode(APP_ID, '13912345678')
  t.equal((await call(url, path(other), { method: 'POST', body: { code } })).errcode, 40029, 'another app\'s token')
  const answer = await call(url, path(token), { method: 'POST', body: { code: mock.mintPhoneCode(APP_ID, '13912345678') } })
  t.same(answer.phone_info, {
    phoneNumber: '13912345678',
    purePhoneNumber: '13912345678',
    countryCode: '86',
    watermark: { timestamp: Math.floor(mock.now() / 1000), appid: APP_ID }
  })
  const once = mock.mintPhoneCode(APP_ID)
  t.equal((await call(url, path(token), { method: 'POST', body: { code: once } })).errcode, 0)
  t.equal((await call(url, path(token), { method: 'POST', body: { code: once } })).errcode, 40029, 'a code works once')
  const late = mock.mintPhoneCode(APP_ID)
  mock.advance(5 * 60 * 1000 + 1)
  t.equal((await call(url, path(token), { method: 'POST', body: { code: late } })).errcode, 40029, 'and for five minutes')
  t.equal((await call(url, path(token), { method: 'GET' })).errcode, 43002)
  t.equal((await call(url, path('nope'), { method: 'POST', body: { code: 'x' } })).errcode, 40001)
  t.equal((await call(url, path(token), { method: 'POST', body: { code: 'demo-13912345678' } })).errcode, 40029, 'demo codes only when asked for')
})

t.test('jscode2session: a minted wx.login code gives its session once, for its own app, within 5 minutes', async (t) => {
  const { mock, url } = await startMock(t)
  mock.setApp('wx1111111111111111', APP_SECRET)
  const path = (code: string, { appid = APP_ID, secret = APP_SECRET, grant = 'authorization_code' } = {}) =>
    `/sns/jscode2session?${new URLSearchParams({ appid, secret, js_code: code, grant_type: grant }).toString()}`
  const login = mock.mintLoginCode(APP_ID, { openid: 'o-mock-user', unionid: 'o-mock-union' })
  t.same(await call(url, path(login.code)), { session_key: login.sessionKey, openid: 'o-mock-user', unionid: 'o-mock-union' })
  t.equal(Buffer.from(login.sessionKey, 'base64').length, 16)
  t.equal((await call(url, path(login.code))).errcode, 40163, 'a code works once')
  t.equal((await call(url, path(mock.mintLoginCode(APP_ID).code, { appid: 'wx1111111111111111' }))).errcode, 40029, 'another app\'s code')
  t.equal((await call(url, path(mock.mintLoginCode(APP_ID).code, { secret: 'f'.repeat(32) }))).errcode, 40125)
  t.equal((await call(url, path(mock.mintLoginCode(APP_ID).code, { appid: 'wx2222222222222222' }))).errcode, 40013)
  t.equal((await call(url, path(mock.mintLoginCode(APP_ID).code, { grant: 'client_credential' }))).errcode, 40002)
  t.equal((await call(url, path(''))).errcode, 41008)
  t.equal((await call(url, path('0'.repeat(32)))).errcode, 40029)
  const late = mock.mintLoginCode(APP_ID)
  mock.advance(5 * 60 * 1000 + 1)
  t.equal((await call(url, path(late.code))).errcode, 40029, 'and for five minutes')
  t.equal((await call(url, path('demo-login-1'))).errcode, 40029, 'demo codes only when asked for')
})

t.test('open data: what the stand-in encrypts decrypts with the login\'s session key, as WeChat\'s does', async (t) => {
  const key = randomBytes(16).toString('base64')
  const sealed = encryptOpenData(key, { nickName: 'n', watermark: { appid: APP_ID, timestamp: 1 } })
  t.equal(Buffer.from(sealed.iv, 'base64').length, 16)
  const decipher = createDecipheriv('aes-128-cbc', Buffer.from(key, 'base64'), Buffer.from(sealed.iv, 'base64'))
  const plain = Buffer.concat([decipher.update(Buffer.from(sealed.encryptedData, 'base64')), decipher.final()]).toString()
  t.same(JSON.parse(plain), { nickName: 'n', watermark: { appid: APP_ID, timestamp: 1 } })
  t.not(encryptOpenData(key, {}).iv, encryptOpenData(key, {}).iv, 'a new iv each time')
  t.equal(demoSessionKey('demo-login-1'), demoSessionKey('demo-login-1'))
  t.not(demoSessionKey('demo-login-1'), demoSessionKey('demo-login-2'))
})
