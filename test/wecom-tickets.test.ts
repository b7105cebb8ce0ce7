/** WeCom's JS-SDK tickets: the corp's, one per corp; an application's, one per application; and their signatures. */
import { createHash } from 'node:crypto'
import t from 'tap'
import { ApiCodes } from '../src/api-codes.js'
import { AGENT_ID, AGENT_SECRET, CORP_ID, OTHER_AGENT_ID, OTHER_AGENT_SECRET, TestClock, build, post, startWecomMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const TICKET = '/api/v3/get-wecom-jsapi-ticket'
const SIGNATURE = '/api/v3/get-wecom-jssdk-signature'
const WECOM_APPS = JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET, [OTHER_AGENT_ID]: OTHER_AGENT_SECRET } })
const env = (url: string) => ({ WECOM_API_BASE: url, WECOM_APPS, SCHEDULER_INTERVAL_SECONDS: '0' })

interface TicketData { ticket: string, expiresAt: string, expiresIn: number }

t.test('on 3 instances: one corp ticket for every application of the corp, one application ticket per application', async (t) => {
  const { redis, fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps } = await fleet(t, 3, 'http://127.0.0.1:9', env(url))
  mock.inject({ fault: { kind: 'latency', ms: 150 }, endpoint: 'get_jsapi_ticket' })
  mock.inject({ fault: { kind: 'latency', ms: 150 }, endpoint: 'ticket/get' })
  const asks = Array.from({ length: 90 }, async (_, i) => {
    const secret = i % 2 === 0 ? AGENT_SECRET : OTHER_AGENT_SECRET
    const type = i % 3 === 0 ? 'corp' : 'agent'
    const { body } = await post<TicketData>(apps[i % 3]!, TICKET, { corpId: CORP_ID, corpSecret: secret, type })
    return { secret, type, body }
  })
  const answers = await Promise.all(asks)
  t.ok(answers.every((a) => a.body.statusCode === 200), answers.find((a) => a.body.statusCode !== 200)?.body.message ?? 'all served')
  const tickets = (type: string, secret?: string) =>
    new Set(answers.filter((a) => a.type === type && (secret === undefined || a.secret === secret)).map((a) => a.body.data?.ticket))
  t.equal(tickets('corp').size, 1, 'one corp ticket, whichever application asked')
  const first = tickets('agent', AGENT_SECRET)
  const second = tickets('agent', OTHER_AGENT_SECRET)
  t.equal(first.size, 1, 'one ticket for the first application')
  t.equal(second.size, 1, 'one for the second')
  t.not([...first][0], [...second][0], 'never the other application\'s ticket')
  t.not([...first][0], [...tickets('corp')][0], 'nor the corp\'s')
  t.equal(mock.calls('get_jsapi_ticket'), 1, 'one get_jsapi_ticket call')
  t.equal(mock.calls('ticket/get'), 2, 'one agent_config call per application')
  t.equal(mock.calls('gettoken'), 2, 'one token per application, fetched once')
  for (const ticket of [...first, ...second, ...tickets('corp')]) t.equal(mock.checkTicket(ticket!), 'valid')

  const metrics = (await apps[0]!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_upstream_calls_total\{endpoint="get_jsapi_ticket",errcode="0"\}/)
  t.notOk([...first, ...second].some((ticket) => metrics.includes(ticket!)), 'no ticket in a metric')
  const client = redis.client()
  t.teardown(() => client.disconnect())
  const keys = await client.keys('*')
  t.ok(keys.some((key) => key.endsWith(':wecom_corp_ticket')) && keys.some((key) => key.endsWith(':wecom_agent_ticket')), keys.join(' '))
  const values = await Promise.all(keys.map(async (key) => await client.type(key) === 'string' ? await client.get(key) ?? '' : ''))
  t.notOk([...keys, ...values].some((text) => text.includes(AGENT_SECRET) || text.includes(OTHER_AGENT_SECRET)), 'no secret in a key or value')
})

t.test('only a configured application, and the agentId sent must be its own: nothing asked of WeCom otherwise', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app } = await build(t, { env: env(url) })
  const other = await post(app, TICKET, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent', agentId: OTHER_AGENT_ID })
  t.equal(other.body.apiCode, ApiCodes.SECRET_MISMATCH.apiCode, other.body.message)
  t.notOk(other.body.message.includes(AGENT_SECRET))
  const wrong = await post(app, TICKET, { corpId: CORP_ID, corpSecret: 'y'.repeat(32), type: 'corp' })
  t.equal(wrong.body.apiCode, ApiCodes.SECRET_MISMATCH.apiCode, wrong.body.message)
  const corp = await post(app, SIGNATURE, { corpId: 'ww00000000000000ff', corpSecret: AGENT_SECRET, type: 'corp', url: 'https://a.example/' })
  t.equal(corp.body.apiCode, ApiCodes.APP_NOT_CONFIGURED.apiCode, corp.body.message)
  for (const body of [
    { corpId: CORP_ID, corpSecret: AGENT_SECRET },
    { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'jsapi' },
    { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent', agentId: 'x1' },
    { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent', agentId: 1000002 }
  ]) {
    t.equal((await post(app, TICKET, body)).body.apiCode, ApiCodes.INVALID_ARGUMENT.apiCode, JSON.stringify(body))
  }
  for (const url of ['ftp://a.example/', 'https://', 'https://a b/', '/relative']) {
    const answer = await post(app, SIGNATURE, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'corp', url })
    t.equal(answer.body.apiCode, ApiCodes.INVALID_ARGUMENT.apiCode, `${url}: ${answer.body.message}`)
  }
  t.equal(mock.calls('gettoken') + mock.calls('get_jsapi_ticket') + mock.calls('ticket/get'), 0, 'WeCom was asked nothing')
  const own = await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent', agentId: AGENT_ID })
  t.equal(own.body.statusCode, 200, own.body.message)
})

t.test('signatures for wx.config and wx.agentConfig: WeCom\'s formula over the ticket of the type asked for', async (t) => {
  const { url } = await startWecomMock(t)
  const { app } = await build(t, { env: env(url) })
  const page = 'https://work.example/page?x=1&y=%E4%B8%AD'
  const sha1 = (ticket: string, nonceStr: string, timestamp: number) =>
    createHash('sha1').update(`jsapi_ticket=${ticket}&noncestr=${nonceStr}&timestamp=${timestamp}&url=${page}`).digest('hex')

  const corpTicket = (await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: OTHER_AGENT_SECRET, type: 'corp' })).body.data!.ticket
  const corp = await post<Record<string, unknown>>(app, SIGNATURE, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'corp', url: `${page}#/route` })
  t.equal(corp.body.statusCode, 200, corp.body.message)
  const c = corp.body.data as { appId: string, timestamp: number, nonceStr: string, signature: string }
  t.same(Object.keys(c).sort(), ['appId', 'nonceStr', 'signature', 'timestamp'], 'what wx.config takes, under its names')
  t.equal(c.appId, CORP_ID)
  t.match(c.nonceStr, /^[A-Za-z0-9]{16}$/)
  t.equal(c.signature, sha1(corpTicket, c.nonceStr, c.timestamp), 'signed with the corp ticket, without the #fragment')

  const agentTicket = (await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent' })).body.data!.ticket
  const agent = await post<Record<string, unknown>>(app, SIGNATURE, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type: 'agent', url: page })
  t.equal(agent.body.statusCode, 200, agent.body.message)
  const a = agent.body.data as { corpid: string, agentid: string, timestamp: number, nonceStr: string, signature: string }
  t.same(Object.keys(a).sort(), ['agentid', 'corpid', 'nonceStr', 'signature', 'timestamp'], 'what wx.agentConfig takes, under its names')
  t.equal(a.corpid, CORP_ID)
  t.equal(a.agentid, AGENT_ID)
  t.equal(a.signature, sha1(agentTicket, a.nonceStr, a.timestamp), 'signed with the application\'s ticket')
  t.not(agentTicket, corpTicket)
})

t.test('an hourly budget per ticket: past it 4006 and no call, until the next hour', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { clock, env: { ...env(url), HOT_CACHE_MS: '0', WECOM_AGENT_TICKET_HOURLY_BUDGET: '2', WECOM_CORP_TICKET_HOURLY_BUDGET: '1' } })
  const owner = `${CORP_ID}:${(await import('../src/fingerprint.js')).fingerprint(CORP_ID, AGENT_SECRET).slice(0, 22)}`
  const ask = async (type: string) => (await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type })).body
  // Move to the start of a clock hour, so that the hour does not turn during the test.
  clock.advance(3600_000 - (clock.now() % 3600_000) + 1000)
  for (let i = 0; i < 2; i++) {
    t.equal((await ask('agent')).statusCode, 200)
    await app.store.delete(owner, 'wecom_agent_ticket')
  }
  const refused = await ask('agent')
  t.equal(refused.apiCode, ApiCodes.TICKET_BUDGET_EXHAUSTED.apiCode, refused.message)
  t.match(refused.message, /for the hour from .*:00 UTC/)
  t.equal(mock.calls('ticket/get'), 2, 'the third never reached WeCom')
  t.equal((await ask('corp')).statusCode, 200, 'the corp ticket has a budget of its own')
  await app.store.delete(CORP_ID, 'wecom_corp_ticket')
  t.equal((await ask('corp')).apiCode, ApiCodes.TICKET_BUDGET_EXHAUSTED.apiCode)
  t.equal(mock.calls('get_jsapi_ticket'), 1)
  clock.advance(3600_000)
  t.equal((await ask('agent')).statusCode, 200, 'the next hour has its budget back')
  t.equal(mock.calls('ticket/get'), 3)
})

t.test('a token WeCom ended early: replaced once, the ticket call made again; a refusal that persists is remembered', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const { app, logs } = await build(t, { env: { ...env(url), HOT_CACHE_MS: '0' } })
  const ask = async (type: string, secret = AGENT_SECRET) => (await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: secret, type })).body
  const token = async () => (await post<{ accessToken: string }>(app, '/api/v3/get-wecom-access-token', { corpId: CORP_ID, corpSecret: AGENT_SECRET })).body.data!.accessToken
  const before = await token()
  mock.endToken(CORP_ID, AGENT_ID, 42001)
  const ticket = await ask('corp')
  t.equal(ticket.statusCode, 200, ticket.message)
  t.equal(mock.calls('gettoken'), 2, 'the ended token replaced once')
  t.equal(mock.calls('get_jsapi_ticket'), 2, 'and the ticket call made again with the new one')
  const after = await token()
  t.not(after, before, 'callers get the new token')
  t.equal(mock.check(after), 'valid')

  mock.endToken(CORP_ID, AGENT_ID, 40014)
  t.equal((await ask('agent')).statusCode, 200, '40014 too')
  t.equal(mock.calls('gettoken'), 3)

  // WeCom refuses every token of the other application on the ticket call: one replacement, then remembered.
  mock.inject({ fault: { kind: 'errcode', errcode: 40014 }, endpoint: 'ticket/get', agentId: OTHER_AGENT_ID })
  const refused = await ask('agent', OTHER_AGENT_SECRET)
  t.equal(refused.apiCode, ApiCodes.WECHAT_TOKEN_REFUSED.apiCode, refused.message)
  const tokens = mock.calls('gettoken')
  for (let i = 0; i < 3; i++) t.equal((await ask('agent', OTHER_AGENT_SECRET)).apiCode, ApiCodes.WECHAT_TOKEN_REFUSED.apiCode)
  t.equal(mock.calls('gettoken'), tokens, 'the token is not replaced again for every request')
  t.equal((await ask('agent')).statusCode, 200, 'the first application is not held back')
  t.ok(logs.records.some((r) => /replacing the token once/.test(String(r.msg))), 'the replacement is logged')
})

t.test('WECOM_API_BASE=mock serves tickets and signatures offline', async (t) => {
  const { app } = await build(t, { env: { WECOM_API_BASE: 'mock', WECOM_APPS, SCHEDULER_INTERVAL_SECONDS: '0' } })
  for (const type of ['corp', 'agent']) {
    const answer = await post(app, SIGNATURE, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type, url: 'https://work.example/' })
    t.equal(answer.body.statusCode, 200, `${type}: ${answer.body.message}`)
  }
})

t.test('WeCom refusing one application\'s IP on the corp ticket call does not refuse the corp ticket to its other applications', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps } = await fleet(t, 2, 'http://127.0.0.1:9', { ...env(url), HOT_CACHE_MS: '0' })
  const ask = async (i: number, secret: string) => (await post<TicketData>(apps[i]!, TICKET, { corpId: CORP_ID, corpSecret: secret, type: 'corp' })).body
  // WeCom's trusted IPs are set per application: the first application's calls come from an IP it does not trust.
  mock.inject({ fault: { kind: 'errcode', errcode: 60020 }, endpoint: 'get_jsapi_ticket', agentId: AGENT_ID })
  const refused = await ask(0, AGENT_SECRET)
  t.equal(refused.apiCode, ApiCodes.WECHAT_IP_NOT_ALLOWED.apiCode, refused.message)
  const remembered = await ask(1, AGENT_SECRET)
  t.equal(remembered.apiCode, ApiCodes.WECHAT_IP_NOT_ALLOWED.apiCode, remembered.message)
  t.equal(mock.calls('get_jsapi_ticket'), 1, 'remembered for that application: its requests spend none of the corp\'s budget')
  const other = await ask(1, OTHER_AGENT_SECRET)
  t.equal(other.statusCode, 200, `the other application gets the corp ticket: ${other.message}`)
  t.equal(mock.calls('get_jsapi_ticket'), 2, 'fetched with the other application\'s token')
  const again = await ask(0, AGENT_SECRET)
  t.equal(again.statusCode, 200, again.message)
  t.equal(again.data?.ticket, other.data?.ticket, 'the corp ticket is the corp\'s: the first application is served it from the store')
})

t.test('an application whose token WeCom keeps refusing on the corp ticket call does not spend the corp\'s hourly budget', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { mock, url } = await startWecomMock(t)
  const { apps } = await fleet(t, 1, 'http://127.0.0.1:9', { ...env(url), HOT_CACHE_MS: '0', WECOM_CORP_TICKET_HOURLY_BUDGET: '5' })
  const ask = async (secret: string) => (await post<TicketData>(apps[0]!, TICKET, { corpId: CORP_ID, corpSecret: secret, type: 'corp' })).body
  mock.inject({ fault: { kind: 'errcode', errcode: 40014 }, endpoint: 'get_jsapi_ticket', agentId: AGENT_ID })
  const first = await ask(AGENT_SECRET)
  t.equal(first.apiCode, ApiCodes.WECHAT_TOKEN_REFUSED.apiCode, first.message)
  for (let i = 0; i < 10; i++) t.equal((await ask(AGENT_SECRET)).apiCode, ApiCodes.WECHAT_TOKEN_REFUSED.apiCode)
  t.ok(mock.calls('get_jsapi_ticket') <= 2, `the refusal, remembered, is not asked again per request (${mock.calls('get_jsapi_ticket')} calls)`)
  const other = await ask(OTHER_AGENT_SECRET)
  t.equal(other.statusCode, 200, `the corp's other application still gets the corp ticket: ${other.message}`)
})

t.test('at their largest, the hourly budgets keep within WeCom\'s limits over any 60 minutes, across the turn of an hour', async (t) => {
  const { ConfigSchema } = await import('../src/config.js')
  const { fingerprint } = await import('../src/fingerprint.js')
  for (const type of ['corp', 'agent'] as const) {
    const variable = type === 'corp' ? 'WECOM_CORP_TICKET_HOURLY_BUDGET' : 'WECOM_AGENT_TICKET_HOURLY_BUDGET'
    const largest = ConfigSchema.properties[variable].maximum as number
    const { fleet } = await fleetRedis(t)
    const { mock, url } = await startWecomMock(t)
    const clock = new TestClock()
    const { apps } = await fleet(t, 1, 'http://127.0.0.1:9', { ...env(url), HOT_CACHE_MS: '0', [variable]: String(largest) }, clock)
    const app = apps[0]!
    const owner = type === 'corp' ? CORP_ID : `${CORP_ID}:${fingerprint(CORP_ID, AGENT_SECRET).slice(0, 22)}`
    const endpoint = type === 'corp' ? 'get_jsapi_ticket' : 'ticket/get'
    // Each request finds no ticket (as after a run of flushes, say): each is a call, until the budget says no.
    const spendHour = async (): Promise<number[]> => {
      const codes: number[] = []
      for (let i = 0; i < largest + 1; i++) {
        const answer = (await post<TicketData>(app, TICKET, { corpId: CORP_ID, corpSecret: AGENT_SECRET, type })).body
        codes.push(answer.apiCode ?? answer.statusCode)
        await app.store.delete(owner, `wecom_${type}_ticket`)
      }
      return codes
    }
    // The last minute of a clock hour, then the first of the next: WeCom counts any 60 minutes.
    clock.advance(3600_000 - (clock.now() % 3600_000) - 60_000)
    const before = await spendHour()
    clock.advance(90_000)
    mock.advance(90_000)
    const after = await spendHour()
    const answered = [...before, ...after]
    t.notOk(answered.includes(ApiCodes.WECHAT_RATE_LIMITED.apiCode),
      `${type}: ${variable}=${largest} never meets WeCom's 45009 (${answered.filter((c) => c === 200).length} tickets fetched in 90 s)`)
    t.equal(mock.calls(endpoint), 2 * largest, `${type}: the budget of each hour spent, no more`)
  }
})
