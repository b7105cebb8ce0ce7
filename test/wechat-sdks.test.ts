/**
 * WeChat SDKs from npm, unchanged but for their API host (and a caller key header), pointed at the service's WeChat-
 * shaped endpoints: node-webot's wechat-api and node-easywechat (Official Account), node-easywechat's Work module and
 * wechat-enterprise-api (WeCom). A herd of separate SDK instances (each with a cache of its own, as separate
 * processes have) over three service instances costs one upstream token fetch. With WECHAT_PASSTHROUGH, their other
 * calls go through the service with the shared token, and a token WeChat revoked is replaced once for all of them.
 */
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import WechatAPI from 'wechat-api'
import WechatEnterpriseAPI from 'wechat-enterprise-api'
import { OfficialAccount, Work } from 'node-easywechat'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, CALLER_KEYS, CORP_ID, startMock, startWecomMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { listen } from './helpers/raw-http.js'
import { MemoryCache } from './helpers/open-platform.js'

const KEY = CALLER_KEYS[0]!
const HERD = 50

/** Three service instances on one Redis, with the WeChat-shaped endpoints and caller keys; their base URLs. */
async function services (t: Test, upstream: string, env: Record<string, string> = {}): Promise<string[]> {
  const { fleet } = await fleetRedis(t)
  const { apps } = await fleet(t, 3, upstream, { WECHAT_COMPAT_API: 'true', AUTH_TOKENS: CALLER_KEYS.join(','), SCHEDULER_INTERVAL_SECONDS: '0', ...env })
  return await Promise.all(apps.map(async (app) => `http://127.0.0.1:${await listen(app)}`))
}

t.test('wechat-api (node-webot): 50 SDK instances over 3 service instances share one token, fetched once', async (t) => {
  const { mock, url } = await startMock(t)
  const bases = await services(t, url)
  const tokens = await Promise.all(Array.from({ length: HERD }, async (_, i) => {
    const api = new WechatAPI(APP_ID, APP_SECRET)
    api.endpoint = bases[i % bases.length]!
    api.setOpts({ beforeRequest: (options) => { options.headers.authorization = `Bearer ${KEY}` } })
    return (await promisify(api.getLatestToken.bind(api))()).accessToken
  }))
  t.equal(new Set(tokens).size, 1, 'one token for every SDK instance')
  t.equal(mock.check(tokens[0]!), 'valid', 'WeChat\'s current token')
  t.equal(mock.calls('stable_token', APP_ID), 1, 'one upstream fetch for the whole herd')

  const tickets = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
    const api = new WechatAPI(APP_ID, APP_SECRET)
    api.endpoint = bases[i % bases.length]!
    api.setOpts({ beforeRequest: (options) => { options.headers.authorization = `Bearer ${KEY}` } })
    return (await promisify(api.getTicket.bind(api))('jsapi')).ticket
  }))
  t.equal(new Set(tickets).size, 1, 'one JS-SDK ticket for every SDK instance')
  t.equal(mock.calls('getticket', APP_ID), 1, 'fetched once')

  const keyless = new WechatAPI(APP_ID, APP_SECRET)
  keyless.endpoint = bases[0]!
  const refused = await promisify(keyless.getLatestToken.bind(keyless))().catch((err: Error & { code?: number }) => err)
  t.equal((refused as { code?: number }).code, 40164, 'without the caller key: WeChat\'s whitelist refusal, which the SDK reports')
})

t.test('node-easywechat: GET /cgi-bin/token and POST /cgi-bin/stable_token, 50 instances, one upstream fetch', async (t) => {
  for (const stable of [false, true]) {
    t.test(stable ? 'use_stable_access_token' : 'cgi-bin/token', async (t) => {
      const { mock, url } = await startMock(t)
      const bases = await services(t, url)
      const tokens = await Promise.all(Array.from({ length: HERD }, async (_, i) => {
        const account = new OfficialAccount({
          app_id: APP_ID,
          secret: APP_SECRET,
          use_stable_access_token: stable,
          http: { baseURL: bases[i % bases.length]!, headers: { authorization: `Bearer ${KEY}` } }
        })
        account.setCache(new MemoryCache())
        return await account.getAccessToken().getToken()
      }))
      t.equal(new Set(tokens).size, 1, 'one token for every SDK instance')
      t.equal(mock.check(tokens[0]!), 'valid')
      t.equal(mock.calls('stable_token', APP_ID), 1, 'one upstream fetch for the whole herd')
      const account = new OfficialAccount({ app_id: APP_ID, secret: APP_SECRET, use_stable_access_token: stable, http: { baseURL: bases[1]!, headers: { authorization: `Bearer ${KEY}` } } })
      account.setCache(new MemoryCache())
      const ticket = await account.getTicket().getTicket()
      t.type(ticket, 'string', 'the JS-SDK ticket through getticket')
      t.equal(mock.calls('getticket', APP_ID), 1)
    })
  }
})

t.test('WeCom: node-easywechat\'s Work and wechat-enterprise-api get the application\'s token from the cache', async (t) => {
  const { mock, url } = await startWecomMock(t)
  const bases = await services(t, 'http://127.0.0.1:9', { WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) })
  const fromWork = await Promise.all(Array.from({ length: 25 }, async (_, i) => {
    const work = new Work({ corp_id: CORP_ID, secret: AGENT_SECRET, http: { baseURL: bases[i % bases.length]!, headers: { authorization: `Bearer ${KEY}` } } })
    work.setCache(new MemoryCache())
    return await work.getAccessToken().getToken()
  }))
  const fromEnterprise = await Promise.all(Array.from({ length: 25 }, async (_, i) => {
    const api = new WechatEnterpriseAPI(CORP_ID, AGENT_SECRET, AGENT_ID)
    api.prefix = `${bases[i % bases.length]!}/cgi-bin/`
    api.setOpts({ beforeRequest: (options) => { options.headers.authorization = KEY } })
    return (await promisify(api.getLatestToken.bind(api))()).accessToken
  }))
  t.equal(new Set([...fromWork, ...fromEnterprise]).size, 1, 'one token for every SDK instance')
  t.equal(mock.check(fromWork[0]!), 'valid')
  t.equal(mock.calls('gettoken'), 1, 'one gettoken for all of them')

  const work = new Work({ corp_id: CORP_ID, secret: AGENT_SECRET, http: { baseURL: bases[2]!, headers: { authorization: `Bearer ${KEY}` } } })
  work.setCache(new MemoryCache())
  const corpTicket = await work.getTicket().getTicket()
  const agentTicket = await work.getTicket().getAgentTicket(Number(AGENT_ID))
  t.equal(mock.checkTicket(corpTicket), 'valid', 'the corp ticket through get_jsapi_ticket')
  t.equal(mock.checkTicket(agentTicket), 'valid', 'the application\'s through ticket/get?type=agent_config')
  t.not(agentTicket, corpTicket)
})

t.test('pass-through: the SDKs\' other calls go through with the shared token; a revoked token is replaced once for all 50', async (t) => {
  const { mock, url } = await startMock(t)
  const bases = await services(t, url, { WECHAT_PASSTHROUGH: 'true', WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }) })
  const webot = Array.from({ length: HERD / 2 }, (_, i) => {
    const api = new WechatAPI(APP_ID, APP_SECRET)
    api.endpoint = bases[i % bases.length]!
    api.setOpts({ beforeRequest: (options) => { options.headers.authorization = `Bearer ${KEY}` } })
    return api
  })
  const easy = Array.from({ length: HERD / 2 }, (_, i) => {
    const account = new OfficialAccount({ app_id: APP_ID, secret: APP_SECRET, http: { baseURL: bases[i % bases.length]!, headers: { authorization: `Bearer ${KEY}` } } })
    account.setCache(new MemoryCache())
    return account
  })
  const menus = [
    ...await Promise.all(webot.map(async (api) => await promisify(api.getMenu.bind(api))())),
    ...await Promise.all(easy.map(async (account) => (await account.getClient().get('cgi-bin/menu/get')).toObject<{ menu: { button: unknown[] } }>()))
  ]
  t.ok(menus.every((menu) => menu.menu.button.length === 1), 'every SDK instance read the menu through the service')
  t.equal(mock.calls('menu/get', APP_ID), HERD, 'each call reached WeChat, with the app\'s token')
  t.equal(mock.calls('stable_token', APP_ID), 1, 'one token fetch for all of them')

  // Someone retires the token at WeChat; every SDK instance still holds it in its own cache.
  mock.revokeTokens(APP_ID)
  const text = { touser: 'oUser0001', msgtype: 'text', text: { content: 'hello' } }
  const sent = [
    ...await Promise.all(webot.map(async (api) => await promisify(api.sendText.bind(api))('oUser0001', 'hello'))),
    ...await Promise.all(easy.map(async (account) => (await account.getClient().postJson('cgi-bin/message/custom/send', text)).toObject<{ errcode: number }>()))
  ]
  t.ok(sent.every((answer) => answer.errcode === 0), 'every message went out')
  t.equal(mock.delivered.length, HERD, 'each once')
  t.equal(mock.issued(APP_ID), 2, 'one replacement for all 50 SDK instances over 3 service instances')
})

t.test('pass-through, WeCom: Work and wechat-enterprise-api read a member through the service, from WeCom', async (t) => {
  const { mock: wechat, url: wechatUrl } = await startMock(t)
  const { mock, url } = await startWecomMock(t)
  const bases = await services(t, wechatUrl, { WECHAT_PASSTHROUGH: 'true', WECOM_API_BASE: url, WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }) })
  const work = new Work({ corp_id: CORP_ID, secret: AGENT_SECRET, http: { baseURL: bases[0]!, headers: { authorization: `Bearer ${KEY}` } } })
  work.setCache(new MemoryCache())
  const api = new WechatEnterpriseAPI(CORP_ID, AGENT_SECRET, AGENT_ID)
  api.prefix = `${bases[1]!}/cgi-bin/`
  api.setOpts({ beforeRequest: (options) => { options.headers.authorization = KEY } })
  const member = async (): Promise<string[]> => [
    (await work.getClient().get('cgi-bin/user/get', { params: { userid: 'zhangsan' } })).toObject<{ userid: string }>().userid,
    (await promisify(api.getUser.bind(api))('lisi')).userid
  ]
  t.same(await member(), ['zhangsan', 'lisi'])
  t.equal(mock.calls('user/get', CORP_ID), 2, 'answered by WeCom')
  t.equal(wechat.calls('menu/get') + wechat.calls('stable_token'), 0, 'nothing went to WeChat')
  mock.endToken(CORP_ID, AGENT_ID, 40014)
  t.same(await member(), ['zhangsan', 'lisi'], 'still answered after WeCom ended the token early')
  t.equal(mock.issued(CORP_ID, AGENT_ID), 2, 'one replacement')
})
