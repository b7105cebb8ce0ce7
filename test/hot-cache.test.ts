import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Type, type TSchema } from '@sinclair/typebox'
import Fastify, { type FastifyInstance } from 'fastify'
import { SignatureDataSchema, TicketDataSchema } from '../src/schemas/credentials.js'
import { EnvelopeSchema, envelopeOf } from '../src/schemas/token.js'
import { WechatErrorSchema, WechatTokenSchema, WecomTokenSchema } from '../src/wechat-api/routes.js'
import { AGENT_ID, AGENT_SECRET, APP_ID, APP_SECRET, CORP_ID, OTHER_SECRET, TestClock, build, post, startMock, startWecomMock } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

const redis = await RedisServer.start()
t.teardown(() => redis.stop())
let prefixes = 0

async function storeReads (): Promise<number> {
  const client = redis.client()
  const stats = await client.info('commandstats')
  client.disconnect()
  return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0)
}

t.test('the hot cache answers repeated requests without reading Redis', async (t) => {
  const { url } = await startMock(t)
  for (const [hotMs, maxReads] of [['2000', 5], ['0', 100]] as const) {
    const { app } = await build(t, { upstream: url, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}`, HOT_CACHE_MS: hotMs } })
    await post(app, ROUTE, body)
    const before = await storeReads()
    for (let i = 0; i < 100; i++) t.equal((await post(app, ROUTE, body)).body.statusCode, 200)
    const reads = await storeReads() - before
    t.ok(hotMs === '0' ? reads >= maxReads : reads <= maxReads, `HOT_CACHE_MS=${hotMs}: ${reads} Redis GETs for 100 requests`)
  }
})

t.test('a wrong secret is never answered from the hot cache', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}` } })
  const good = await post(app, ROUTE, body)
  const wrong = await post(app, ROUTE, { appId: APP_ID, appSecret: OTHER_SECRET })
  t.not(wrong.body.statusCode, 200)
  t.notOk(wrong.body.data)
  t.equal(mock.calls('stable_token'), 2, 'it went the checked way (one upstream check)')
  t.equal((await post(app, ROUTE, body)).body.data?.accessToken, good.body.data?.accessToken)
})

t.test('when one instance replaces a token, the others drop their hot copy at once', async (t) => {
  const { url } = await startMock(t)
  const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}`, HOT_CACHE_MS: '60000' }
  const a = (await build(t, { upstream: url, env })).app
  const b = (await build(t, { upstream: url, env })).app
  t.ok(await until(() => a.store.pubsubUp && b.store.pubsubUp), 'both instances subscribed')
  const old = (await post(a, ROUTE, body)).body.data!.accessToken
  t.equal((await post(a, ROUTE, body)).body.data?.accessToken, old, 'A serves it from its hot cache')
  const replaced = await post(b, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: old })
  const fresh = replaced.body.data!.accessToken
  t.not(fresh, old, 'B replaced it')
  let seen = ''
  const started = Date.now()
  while (Date.now() - started < 2000) {
    seen = (await post(a, ROUTE, body)).body.data!.accessToken
    if (seen === fresh) break
    await sleep(5)
  }
  t.equal(seen, fresh, `A serves the new token ${Date.now() - started} ms after B replaced it, not after HOT_CACHE_MS (60 s)`)
})

/** Hot-cache hits of every credential so far, as the lookup counter has them. */
async function hotHits (app: FastifyInstance): Promise<number> {
  const counted = await app.metrics.registry.getSingleMetric('wxtoken_cache_lookups_total')!.get()
  return counted.values.filter(({ labels }) => labels.layer === 'hot' && labels.result === 'hit').reduce((sum, { value }) => sum + value, 0)
}

/** What Fastify's serializer makes of `data` under a route's response schema: the bytes a route returning it sends. */
async function serialized (schema: TSchema, data: unknown): Promise<{ payload: string, type: string | undefined }> {
  const plain = Fastify()
  plain.get('/', { schema: { response: { 200: schema } } }, async () => data)
  const res = await plain.inject({ method: 'GET', url: '/' })
  await plain.close()
  return { payload: res.payload, type: res.headers['content-type'] as string | undefined }
}

t.test('an answer sent as text is byte for byte what the route\'s serializer makes of it, from the store and from the hot cache', async (t) => {
  const { url } = await startMock(t)
  const wecom = await startWecomMock(t)
  // A clock that stands still: the seconds left are the same in both answers.
  const at = Date.now()
  const clock = Object.assign(new TestClock(), { now: () => at })
  const env = {
    WECHAT_COMPAT_API: 'true',
    WECOM_API_BASE: wecom.url,
    WECOM_APPS: JSON.stringify({ [CORP_ID]: { [AGENT_ID]: AGENT_SECRET } }),
    SCHEDULER_INTERVAL_SECONDS: '0'
  }
  const signature = { ...body, url: 'https://example.com/page?x=1' }
  const wecomBody = { corpId: CORP_ID, corpSecret: AGENT_SECRET }
  const tickets = envelopeOf(TicketDataSchema)
  // Each route with its response schema, as the route declares it.
  const cases: Array<{ name: string, method: 'GET' | 'POST', path: string, payload?: unknown, schema: TSchema }> = [
    { name: 'token', method: 'POST', path: ROUTE, payload: body, schema: EnvelopeSchema },
    { name: 'obsolete token route', method: 'POST', path: '/api/v3/get-wechat-access-token', payload: body, schema: EnvelopeSchema },
    { name: 'ticket', method: 'POST', path: '/api/v3/get-wechat-jsapi-ticket', payload: body, schema: tickets },
    { name: 'signature', method: 'POST', path: '/api/v3/get-wechat-jssdk-signature', payload: signature, schema: envelopeOf(SignatureDataSchema) },
    { name: 'WeCom token', method: 'POST', path: '/api/v3/get-wecom-access-token', payload: wecomBody, schema: EnvelopeSchema },
    { name: 'WeCom ticket', method: 'POST', path: '/api/v3/get-wecom-jsapi-ticket', payload: { ...wecomBody, type: 'corp' }, schema: tickets },
    {
      name: 'WeChat\'s /cgi-bin/token',
      method: 'GET',
      path: `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`,
      schema: Type.Union([WechatTokenSchema, WechatErrorSchema])
    },
    {
      name: 'WeCom\'s /cgi-bin/gettoken',
      method: 'GET',
      path: `/cgi-bin/gettoken?corpid=${CORP_ID}&corpsecret=${AGENT_SECRET}`,
      schema: Type.Union([WecomTokenSchema, WechatErrorSchema])
    }
  ]
  for (const { name, method, path, payload, schema } of cases) {
    // Each from the store first (a fresh instance, its hot cache empty), then from the hot cache.
    const { app } = await build(t, { upstream: url, clock, env: { ...env, REDIS_URL: redis.url, REDIS_KEY_PREFIX: `hot${++prefixes}` } })
    t.ok(await until(() => app.store.pubsubUp), 'change messages reach it (the hot cache needs them)')
    const ask = async () => await app.inject({
      method,
      url: path,
      headers: { 'x-request-id': 'same-request-id', ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(payload === undefined ? {} : { payload: JSON.stringify(payload) })
    })
    const stored = await ask()
    const hitsBefore = await hotHits(app)
    t.match(stored.payload, /"(accessToken|ticket|access_token|signature)":/, `${name}: an answer with its credential`)
    const hot = await ask()
    // A signature is made for each request: its nonce and signature differ, nothing else.
    const same = (text: string) => text.replace(/"nonceStr":"\w+","signature":"\w+"/, '"nonceStr":"","signature":""')
    t.equal(same(hot.payload), same(stored.payload), `${name}: the same bytes`)
    t.equal(hot.headers['content-type'], stored.headers['content-type'], `${name}: the same content-type`)
    t.equal(hot.headers['content-length'], stored.headers['content-length'], `${name}: the same length`)
    t.equal(await hotHits(app), hitsBefore + 1, `${name}: the second answer came from the hot cache`)
    const expected = await serialized(schema, JSON.parse(hot.payload))
    t.equal(hot.payload, expected.payload, `${name}: what the serializer makes of the same answer`)
    t.equal(hot.headers['content-type'], expected.type, `${name}: with the serializer's content-type`)
  }
})
