import t from 'tap'
import { request } from 'undici'
import { APP_ID, APP_SECRET, startMock } from './helpers/build.js'

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
  const { url } = await startMock(t, { classicDailyQuota: 2 })
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
