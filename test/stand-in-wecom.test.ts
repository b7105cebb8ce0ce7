import t from 'tap'
import { request } from 'undici'
import { AGENT_ID, AGENT_SECRET, CORP_ID, OTHER_AGENT_ID, OTHER_AGENT_SECRET, startWecomMock } from './helpers/build.js'

async function call (url: string, path: string) {
  const res = await request(`${url}${path}`)
  if (res.headers['content-type'] !== 'application/json; encoding=utf-8') throw new Error('WeCom answers application/json; encoding=utf-8')
  return await res.body.json() as Record<string, unknown>
}

const tokenPath = (secret = AGENT_SECRET, corpId = CORP_ID) =>
  `/cgi-bin/gettoken?${new URLSearchParams({ corpid: corpId, corpsecret: secret }).toString()}`
const corpTicketPath = (token: string) => `/cgi-bin/get_jsapi_ticket?access_token=${token}`
const agentTicketPath = (token: string, type = 'agent_config') => `/cgi-bin/ticket/get?access_token=${token}&type=${type}`
const tokenOf = async (url: string, secret = AGENT_SECRET) => (await call(url, tokenPath(secret))).access_token as string
/** WeCom's errmsg: the message, a hint, the caller's address and the errcode's page. */
const WECOM_ERRMSG = /^[a-z_ ]+, hint: \[\d+_\d+_[0-9a-f]{32}\], from ip: 127\.0\.0\.1, more info at https:\/\/open\.work\.weixin\.qq\.com\/devtool\/query\?e=(\d+)$/

t.test('gettoken: the same token within its lifetime, expires_in counting down, a new one once it has expired', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const first = await call(url, tokenPath())
  t.same(Object.keys(first).sort(), ['access_token', 'errcode', 'errmsg', 'expires_in'])
  t.equal(first.errcode, 0)
  t.equal(first.errmsg, 'ok')
  t.equal(first.expires_in, 7200)
  mock.advance(600_000)
  const again = await call(url, tokenPath())
  t.equal(again.access_token, first.access_token, 'a repeated fetch within the lifetime returns the same token')
  t.equal(again.expires_in, 6600, 'with its remaining life')
  t.equal(mock.issued(CORP_ID, AGENT_ID), 1)
  mock.advance(6600_000)
  t.equal(mock.check(first.access_token as string), 'expired')
  t.equal((await call(url, corpTicketPath(first.access_token as string))).errcode, 42001, 'an expired token')
  const renewed = await call(url, tokenPath())
  t.not(renewed.access_token, first.access_token, 'a new token once the old one expired')
  t.equal(renewed.expires_in, 7200)
  t.equal(mock.issued(CORP_ID, AGENT_ID), 2)
  t.same(mock.issuedTokens(), [first.access_token, renewed.access_token])
  t.equal(mock.calls('gettoken'), 3)
  t.equal(mock.calls('gettoken', CORP_ID), 3)
})

t.test('gettoken: each application of a corp has its own token; a fetch by one leaves the other\'s alone', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const one = await tokenOf(url)
  const other = await tokenOf(url, OTHER_AGENT_SECRET)
  t.not(other, one, 'two applications of one corp get different tokens')
  t.equal(await tokenOf(url), one)
  t.equal(await tokenOf(url, OTHER_AGENT_SECRET), other)
  t.equal(mock.issued(CORP_ID, AGENT_ID), 1)
  t.equal(mock.issued(CORP_ID, OTHER_AGENT_ID), 1)
  mock.endToken(CORP_ID, OTHER_AGENT_ID)
  t.equal(await tokenOf(url), one, 'ending one application\'s token leaves the other\'s')
  t.equal(mock.check(one), 'valid')
  t.not(await tokenOf(url, OTHER_AGENT_SECRET), other)
  t.equal(mock.issued(CORP_ID, AGENT_ID), 1)
  t.equal(mock.issued(CORP_ID, OTHER_AGENT_ID), 2)
  t.throws(() => mock.setApplication(CORP_ID, '1000004', AGENT_SECRET), 'no two applications of a corp share a secret')
})

t.test('gettoken errcodes: 41002, 41004, 40013, 40001 for a wrong secret; each errmsg in WeCom\'s shape', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const cases: Array<[string, number]> = [
    [`/cgi-bin/gettoken?corpsecret=${AGENT_SECRET}`, 41002],
    [`/cgi-bin/gettoken?corpid=${CORP_ID}`, 41004],
    [`/cgi-bin/gettoken?corpid=${CORP_ID}&corpsecret=`, 41004],
    [tokenPath(AGENT_SECRET, 'ww1111111111111111'), 40013],
    [tokenPath('x'.repeat(43)), 40001]
  ]
  for (const [path, errcode] of cases) {
    const answer = await call(url, path)
    t.equal(answer.errcode, errcode, path)
    t.notOk('access_token' in answer)
    t.equal(WECOM_ERRMSG.exec(answer.errmsg as string)?.[1], String(errcode), `${errcode}: ${answer.errmsg as string}`)
  }
  t.same(mock.issuedTokens(), [])
  t.equal(mock.calls('gettoken', CORP_ID), 3, 'counted by the corpid the request named')
  t.equal((await request(`${url}/cgi-bin/nothing`)).statusCode, 404)
})

t.test('ended early: 42001 or 40014 for the ended token, and gettoken issues a new one', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const first = await tokenOf(url)
  mock.endToken(CORP_ID, AGENT_ID)
  t.equal(mock.check(first), 'expired')
  t.equal((await call(url, corpTicketPath(first))).errcode, 42001)
  t.equal((await call(url, agentTicketPath(first))).errcode, 42001)
  const second = await tokenOf(url)
  t.not(second, first)
  t.equal((await call(url, corpTicketPath(second))).errcode, 0)
  mock.endToken(CORP_ID, AGENT_ID, 40014)
  t.equal(mock.check(second), 'invalid')
  t.equal((await call(url, corpTicketPath(second))).errcode, 40014)
  const third = await call(url, tokenPath())
  t.not(third.access_token, second)
  t.equal(third.expires_in, 7200)
  t.equal(mock.issued(CORP_ID, AGENT_ID), 3)
})

t.test('get_jsapi_ticket: the corp\'s ticket, the same within its lifetime and for every application; token errcodes', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const token = await tokenOf(url)
  const first = await call(url, corpTicketPath(token))
  t.same(Object.keys(first).sort(), ['errcode', 'errmsg', 'expires_in', 'ticket'])
  t.equal(first.errcode, 0)
  t.equal(first.errmsg, 'ok')
  t.equal(first.expires_in, 7200)
  t.equal(mock.checkTicket(first.ticket as string), 'valid')
  mock.advance(60_000)
  const again = await call(url, corpTicketPath(await tokenOf(url, OTHER_AGENT_SECRET)))
  t.equal(again.ticket, first.ticket, 'one ticket for the corp, whichever application asks')
  t.equal(again.expires_in, 7140)
  mock.advance(7140_000)
  t.equal(mock.checkTicket(first.ticket as string), 'expired')
  const renewed = await call(url, corpTicketPath(await tokenOf(url)))
  t.not(renewed.ticket, first.ticket, 'a new ticket once it expired')
  t.same(mock.issuedTickets(), [first.ticket, renewed.ticket])
  for (const [path, errcode] of [['/cgi-bin/get_jsapi_ticket', 41001], [corpTicketPath('nope'), 40014], [corpTicketPath(token), 42001]] as const) {
    const answer = await call(url, path)
    t.equal(answer.errcode, errcode, path)
    t.equal(WECOM_ERRMSG.exec(answer.errmsg as string)?.[1], String(errcode))
  }
  t.equal(mock.calls('get_jsapi_ticket'), 6)
  t.equal(mock.calls('get_jsapi_ticket', CORP_ID), 4, 'counted by the corp of a known token')
})

t.test('ticket/get?type=agent_config: each application\'s own ticket, the same within its lifetime; other types refused', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const one = await tokenOf(url)
  const other = await tokenOf(url, OTHER_AGENT_SECRET)
  const first = await call(url, agentTicketPath(one))
  t.same(Object.keys(first).sort(), ['errcode', 'errmsg', 'expires_in', 'ticket'])
  t.equal(first.errcode, 0)
  t.equal(first.expires_in, 7200)
  const corp = await call(url, corpTicketPath(one))
  t.not(corp.ticket, first.ticket, 'the application\'s ticket is not the corp\'s')
  const others = await call(url, agentTicketPath(other))
  t.not(others.ticket, first.ticket, 'two applications get different tickets')
  mock.advance(1000_000)
  const again = await call(url, agentTicketPath(one))
  t.equal(again.ticket, first.ticket)
  t.equal(again.expires_in, 6200)
  mock.advance(6200_000)
  const fresh = await tokenOf(url)
  t.not((await call(url, agentTicketPath(fresh))).ticket, first.ticket, 'a new ticket once it expired')
  t.equal((await call(url, agentTicketPath(fresh, 'jsapi'))).errcode, 40058)
  t.equal((await call(url, `/cgi-bin/ticket/get?access_token=${fresh}`)).errcode, 40058)
  t.equal((await call(url, '/cgi-bin/ticket/get?type=agent_config')).errcode, 41001)
  t.equal((await call(url, agentTicketPath('nope'))).errcode, 40014)
  t.equal((await call(url, agentTicketPath(one))).errcode, 42001)
  t.equal(mock.issuedTickets().length, 4)
  t.equal(mock.calls('ticket/get', CORP_ID), 7)
})

t.test('limits: 400 corp tickets an hour per corp, 100 application tickets an hour per application, then 45009', async (t) => {
  const OTHER_CORP = 'ww2222222222222222'
  const { mock, url } = await startWecomMock(t, {
    corps: { [CORP_ID]: { [AGENT_ID]: AGENT_SECRET, [OTHER_AGENT_ID]: OTHER_AGENT_SECRET }, [OTHER_CORP]: { [AGENT_ID]: AGENT_SECRET } }
  })
  const one = await tokenOf(url)
  const other = await tokenOf(url, OTHER_AGENT_SECRET)
  const elsewhere = (await call(url, tokenPath(AGENT_SECRET, OTHER_CORP))).access_token as string
  const errcodes = async (path: string, times: number) => {
    const seen = new Set<unknown>()
    for (let i = 0; i < times; i++) seen.add((await call(url, path)).errcode)
    return [...seen]
  }

  t.same(await errcodes(agentTicketPath(one), 100), [0], '100 application tickets in an hour')
  const refused = await call(url, agentTicketPath(one))
  t.equal(refused.errcode, 45009, 'the 101st is refused')
  t.equal(WECOM_ERRMSG.exec(refused.errmsg as string)?.[1], '45009')
  t.equal((await call(url, agentTicketPath(other))).errcode, 0, 'the limit is per application')

  t.same(await errcodes(corpTicketPath(one), 200), [0])
  t.same(await errcodes(corpTicketPath(other), 200), [0], 'both applications\' calls count for the corp')
  t.equal((await call(url, corpTicketPath(other))).errcode, 45009, 'the 401st in an hour is refused')
  t.equal((await call(url, corpTicketPath(one))).errcode, 45009)
  t.equal((await call(url, corpTicketPath(elsewhere))).errcode, 0, 'the limit is per corp')
  t.equal(mock.issuedTickets().length, 4, 'the same tickets were answered all along')

  mock.advance(30 * 60_000)
  t.equal((await call(url, corpTicketPath(one))).errcode, 45009, 'within the hour')
  t.equal((await call(url, agentTicketPath(one))).errcode, 45009)
  mock.advance(30 * 60_000)
  t.equal((await call(url, corpTicketPath(one))).errcode, 0, 'an hour after, answered again')
  t.equal((await call(url, agentTicketPath(one))).errcode, 0)
})

t.test('limits can be set lower; refused calls do not count', async (t) => {
  const { mock, url } = await startWecomMock(t, { corpTicketHourlyLimit: 2, agentTicketHourlyLimit: 1 })
  const token = await tokenOf(url)
  const corp = async () => (await call(url, corpTicketPath(token))).errcode
  const agent = async () => (await call(url, agentTicketPath(token))).errcode
  t.same([await corp(), await corp(), await agent()], [0, 0, 0])
  mock.advance(30 * 60_000)
  t.same([await corp(), await corp(), await agent(), await agent()], [45009, 45009, 45009, 45009])
  mock.advance(30 * 60_000)
  t.same([await corp(), await agent()], [0, 0], 'an hour after the answered calls, whatever was refused since')
})

t.test('faults apply to matching requests by endpoint, corp and application, a given number of times', async (t) => {
  const { mock, url } = await startWecomMock(t)
  mock.inject({ fault: { kind: 'errcode', errcode: 60020 }, endpoint: 'gettoken', agentId: OTHER_AGENT_ID, times: 1 })
  t.equal((await call(url, tokenPath())).errcode, 0, 'another application')
  const blocked = await call(url, tokenPath(OTHER_AGENT_SECRET))
  t.equal(blocked.errcode, 60020)
  t.equal(WECOM_ERRMSG.exec(blocked.errmsg as string)?.[1], '60020')
  t.equal((await call(url, tokenPath(OTHER_AGENT_SECRET))).errcode, 0, 'once')

  const token = await tokenOf(url)
  mock.inject({ fault: { kind: 'errcode', errcode: 45033, errmsg: 'api concurrent out of limit' }, corpId: CORP_ID, endpoint: 'get_jsapi_ticket' })
  t.equal((await call(url, corpTicketPath(token))).errcode, 45033, 'matched by the token\'s corp')
  t.equal((await call(url, corpTicketPath(token))).errcode, 45033, 'unlimited without times')
  t.equal((await call(url, agentTicketPath(token))).errcode, 0, 'another endpoint')
  mock.clearFaults()
  t.equal((await call(url, corpTicketPath(token))).errcode, 0)

  mock.inject({ fault: { kind: 'http', status: 502 }, times: 1 })
  t.equal((await request(`${url}${tokenPath()}`)).statusCode, 502)
  mock.inject({ fault: { kind: 'garbage' }, times: 1 })
  const garbage = await request(`${url}${tokenPath()}`)
  t.equal(await garbage.body.text(), '<html>not json')
  mock.inject({ fault: { kind: 'drop' }, times: 1 })
  await t.rejects(request(`${url}${tokenPath()}`))
  mock.inject({ fault: { kind: 'latency', ms: 20 }, times: 1 })
  t.equal((await call(url, tokenPath())).access_token, token, 'after the delay, the same token')
  mock.inject({ fault: { kind: 'hang' }, times: 1 })
  await t.rejects(request(`${url}${tokenPath()}`, { headersTimeout: 200 }))
  t.equal((await call(url, tokenPath())).access_token, token)
})
