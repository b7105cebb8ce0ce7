import { readFile } from 'node:fs/promises'
import { connect, type AddressInfo } from 'node:net'
import { getHeapStatistics } from 'node:v8'
import t from 'tap'
import { request } from 'undici'
import { loadConfig } from '../src/config.js'
import { APP_ID, APP_SECRET, CALLER_KEYS, OTHER_SECRET, TestClock, build, post, startMock } from './helpers/build.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

function value (text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '))
  return line ? Number(line.slice(series.length + 1)) : 0
}

t.test('GET /metrics exposes requests, cache layers, upstream calls, forced refreshes, quota and seconds left', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const token = (await post(app, ROUTE, body)).body.data!.accessToken
  await post(app, ROUTE, body)
  await post(app, ROUTE, { appId: 'wx123', appSecret: APP_SECRET })
  mock.inject({ fault: { kind: 'errcode', errcode: 40013 }, appId: 'wx00000000000000dd', times: 1 })
  await post(app, ROUTE, { appId: 'wx00000000000000dd', appSecret: APP_SECRET })
  await post(app, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: token })
  await post(app, '/api/v3/refresh-wechat-access-token', { ...body, accessToken: 'not-current' })

  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /text\/plain/)
  const text = res.body
  t.equal(value(text, 'wxtoken_requests_total{route="/api/v3/get-wechat-access-token-info",status_code="200"}'), 2)
  t.equal(value(text, 'wxtoken_requests_total{route="/api/v3/get-wechat-access-token-info",status_code="400"}'), 2)
  t.equal(value(text, 'wxtoken_cache_lookups_total{credential="access_token",layer="hot",result="hit"}'), 1)
  t.equal(value(text, 'wxtoken_upstream_calls_total{endpoint="stable_token",errcode="0"}'), 2)
  t.equal(value(text, 'wxtoken_upstream_calls_total{endpoint="stable_token",errcode="40013"}'), 1)
  t.equal(value(text, 'wxtoken_upstream_seconds_count{endpoint="stable_token"}'), 3)
  t.equal(value(text, 'wxtoken_forced_refreshes_total{outcome="refreshed"}'), 1)
  t.equal(value(text, `wxtoken_upstream_quota_used{app_id="${APP_ID}",credential="access_token"}`), 1, 'the forced refresh (the first fetch came from the allowance for unverified secrets)')
  const left = value(text, `wxtoken_token_seconds_left{app_id="${APP_ID}",credential="access_token"}`)
  t.ok(left > 7100 && left <= 7200, `seconds left: ${left}`)
  t.match(text, /wxtoken_process_resident_memory_bytes/, 'process metrics too')
  t.notMatch(text, /app_id="wx00000000000000dd"/, 'an app WeChat refused gets no per-app series (they could grow without bound)')
  for (const secret of [APP_SECRET, OTHER_SECRET, token, ...mock.issuedTokens()]) t.notOk(text.includes(secret), 'no secret or token in any label')

  // Hot-path counts are handed over at each collection: a later scrape (past the second a rendering is reused for)
  // adds to what the earlier one showed.
  await post(app, ROUTE, body)
  await post(app, ROUTE, body)
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const later = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(value(later, 'wxtoken_requests_total{route="/api/v3/get-wechat-access-token-info",status_code="200"}'), 4)
  // The forced refresh dropped the hot copy: one store hit puts it back, then one more hot hit.
  t.equal(value(later, 'wxtoken_cache_lookups_total{credential="access_token",layer="hot",result="hit"}'), 2)
  t.equal(value(later, 'wxtoken_cache_lookups_total{credential="access_token",layer="store",result="hit"}'), 1)
  t.equal(value(later, 'wxtoken_requests_total{route="/metrics",status_code="200"}'), 2, 'both scrapes counted')
})

t.test('concurrent scrapes within a second share one rendering', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { METRICS_SCRAPES_PER_SECOND: '50' } })
  await post(app, ROUTE, body)
  let renderings = 0
  const metrics = app.metrics.registry.metrics.bind(app.metrics.registry)
  app.metrics.registry.metrics = async () => { renderings++; return await metrics() }
  const scrapes = await Promise.all(Array.from({ length: 20 }, async () => await app.inject({ method: 'GET', url: '/metrics' })))
  t.ok(scrapes.every((res) => res.statusCode === 200 && res.body.includes('wxtoken_requests_total')))
  t.equal(renderings, 1, '20 scrapes, one rendering')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(renderings, 2, 'a scrape a second later renders again')
})

t.test('GET /metrics exposes the budgets, the serving margin, the heap limit and the version', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, {
    upstream: url,
    env: { DAILY_UPSTREAM_BUDGET: '1500', TICKET_DAILY_BUDGET: '300', TOKEN_SERVE_MARGIN_SECONDS: '100' }
  })
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(value(text, 'wxtoken_upstream_budget{credential="access_token"}'), 1500)
  t.equal(value(text, 'wxtoken_upstream_budget{credential="jsapi_ticket"}'), 300)
  t.equal(value(text, 'wxtoken_upstream_budget{credential="wx_card_ticket"}'), 300)
  t.equal(value(text, 'wxtoken_token_serve_margin_seconds'), 100)
  const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  t.equal(value(text, `wxtoken_build_info{version="${version}"}`), 1)
  t.equal(text.split('\n').filter((line) => line.startsWith('wxtoken_build_info{')).length, 1, 'one version')
  t.equal(value(text, 'wxtoken_heap_limit_bytes'), getHeapStatistics().heap_size_limit)
})

t.test('the configured apps, and the series the alerts watch for a first event, exist from the start', async (t) => {
  const { url } = await startMock(t)
  const { app: dynamic } = await build(t, { upstream: url })
  const fresh = (await dynamic.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(value(fresh, 'wxtoken_configured_apps'), 0, 'dynamic mode')
  for (const errcode of ['40164', '89506', '40125', '40013', '45009', '-1']) {
    t.match(fresh, `wxtoken_upstream_calls_total{endpoint="stable_token",errcode="${errcode}"} 0`, `errcode ${errcode} at 0 before any call`)
  }
  t.match(fresh, 'wxtoken_local_refusals_total{reason="budget",credential="jsapi_ticket"} 0')
  t.match(fresh, 'wxtoken_lock_wait_timeouts_total{credential="access_token"} 0')
  t.match(fresh, 'wxtoken_forced_refreshes_total{outcome="refused"} 0')
  const { app: classic } = await build(t, {
    upstream: url,
    env: { WECHAT_TOKEN_MODE: 'classic', WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), SCHEDULER_INTERVAL_SECONDS: '0' }
  })
  const text = (await classic.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(value(text, 'wxtoken_configured_apps'), 1)
  t.match(text, 'wxtoken_upstream_calls_total{endpoint="token",errcode="40164"} 0', 'the classic endpoint\'s')
})

/** The per-app samples of a metric for a credential: appId to value. */
function perApp (text: string, metric: string, credential: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const [, appId, value] of text.matchAll(new RegExp(`^${metric}\\{app_id="(\\w+)",credential="${credential}"\\} (\\S+)$`, 'gm'))) {
    samples.set(appId!, Number(value))
  }
  return samples
}

t.test('with 3,000 apps known, per-app series are METRICS_MAX_APPS a metric and credential: the fewest seconds left, the most quota used', async (t) => {
  const { url } = await startMock(t, { autoRegister: true })
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock, env: { UNVERIFIED_CHECKS_PER_CALLER: '100000' } })
  const appId = (i: number): string => `wx${(0xa00000 + i).toString(16).padStart(16, '0')}`
  const fill = async (from: number, to: number): Promise<void> => {
    for (let i = from; i < to; i += 250) {
      const answers = await Promise.all(Array.from({ length: Math.min(250, to - i) }, async (_, j) => await post(app, ROUTE, { appId: appId(i + j), appSecret: APP_SECRET })))
      if (!answers.every(({ body }) => body.statusCode === 200)) throw new Error('an app got no token')
    }
  }
  // Tokens expire 7,200 s after the service's clock at the fetch: fetched an hour "earlier", five apps have the fewest
  // seconds left; fetched two hours and more earlier, one has expired; the other 3,000 were fetched last.
  clock.advance(-7300_000)
  await fill(0, 1)
  clock.advance(3700_000)
  await fill(1, 6)
  clock.advance(3600_000)
  await fill(6, 3006)
  const urgent = [1, 2, 3, 4, 5].map(appId)
  // Quota is counted as the guards spend it: 0 to 999 calls, three apps each; three apps far more.
  for (let i = 0; i < 3000; i++) app.metrics.quotaUsed.labels(appId(i + 6), 'jsapi_ticket').set(i % 1000)
  for (const [i, used] of [[6, 5000], [7, 4000], [8, 3000]] as const) app.metrics.quotaUsed.labels(appId(i), 'jsapi_ticket').set(used)

  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  const left = perApp(text, 'wxtoken_token_seconds_left', 'access_token')
  t.equal(left.size, 100, '100 seconds-left series (METRICS_MAX_APPS), not 3,006')
  t.ok(urgent.every((id) => left.has(id)), 'the five apps with the fewest seconds left are among them')
  t.notOk(left.has(appId(0)), 'an expired token counts last: it does not push out an app with some left')
  const urgentLeft = urgent.map((id) => left.get(id)!)
  t.ok(Math.max(...urgentLeft) < Math.min(...[...left].filter(([id]) => !urgent.includes(id)).map(([, v]) => v)), 'they have fewer left than the others shown')
  t.equal(value(text, 'wxtoken_known_apps{credential="access_token"}'), 3006, 'every app is counted')
  t.equal(value(text, 'wxtoken_token_seconds_left_min{credential="access_token"}'), Math.min(...urgentLeft), 'the least seconds left, over every app')

  const used = perApp(text, 'wxtoken_upstream_quota_used', 'jsapi_ticket')
  t.equal(used.size, 100, '100 quota series')
  t.same([appId(6), appId(7), appId(8)].map((id) => used.get(id)), [5000, 4000, 3000], 'the apps that used the most are among them')
  t.ok([...used.values()].every((n) => n >= 967), 'and the others shown are those that used the most after them (999 down to 967)')
  t.equal(value(text, 'wxtoken_upstream_quota_used_max{credential="jsapi_ticket"}'), 5000)
  t.equal(value(text, 'wxtoken_upstream_quota_used_max{credential="wx_card_ticket"}'), 0, 'no call, 0')
  t.ok(text.split('\n').filter((line) => line.includes('app_id="')).length <= 2 * 3 * 100, 'at most METRICS_MAX_APPS per metric and credential in all')
})

t.test('METRICS_MAX_APPS bounds the per-app series, 0 leaving the aggregates only', async (t) => {
  const { url } = await startMock(t, { autoRegister: true })
  for (const max of [2, 0]) {
    const { app } = await build(t, { upstream: url, env: { METRICS_MAX_APPS: String(max) } })
    for (const id of ['wx00000000000000a1', 'wx00000000000000a2', 'wx00000000000000a3']) {
      t.equal((await post(app, ROUTE, { appId: id, appSecret: APP_SECRET })).body.statusCode, 200)
    }
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
    t.equal(perApp(text, 'wxtoken_token_seconds_left', 'access_token').size, max, `METRICS_MAX_APPS=${max}`)
    t.equal(value(text, 'wxtoken_known_apps{credential="access_token"}'), 3, 'every app counted')
    t.ok(value(text, 'wxtoken_token_seconds_left_min{credential="access_token"}') > 7000, 'the least seconds left, over every app')
  }
})

t.test('the exposition does not tell the Node.js version', async (t) => {
  const { app } = await build(t)
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(text, /wxtoken_process_start_time_seconds/, 'process metrics are there')
  t.notMatch(text, /nodejs_version_info/, 'no nodejs_version_info')
  t.notOk(text.includes(process.version), `no ${process.version} anywhere`)
})

t.test('scrapes past METRICS_SCRAPES_PER_SECOND get a 429 with retry-after when the second ends, and are counted', async (t) => {
  const { app, logs } = await build(t, { env: { METRICS_SCRAPES_PER_SECOND: '5' } })
  const first = Math.floor(Date.now() / 1000)
  const burst = await Promise.all(Array.from({ length: 20 }, async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' })
    return { res, second: Math.floor(Date.now() / 1000) }
  }))
  const answered = burst.filter(({ res }) => res.statusCode === 200)
  const refused = burst.filter(({ res }) => res.statusCode === 429)
  t.equal(answered.length + refused.length, 20, 'each scrape is answered or refused')
  // Each scrape answered was counted in a second between the burst's first and the one it arrived in.
  const windows = Math.max(...answered.map(({ second }) => second)) - first + 1
  t.ok(answered.length >= 5 && answered.length <= 5 * windows, `${answered.length} answered: 5 a second (over ${windows} s)`)
  t.ok(answered.every(({ res }) => res.body.includes('wxtoken_requests_total')), 'with the exposition')
  t.ok(refused.every(({ second }) => second > first), 'a refusal comes once the second it was refused in ended')
  for (const { res } of refused) {
    t.equal(res.headers['retry-after'], '1')
    t.match(res.headers['content-type'], /application\/json/)
    t.match(res.json(), { statusCode: 429, apiCode: 4004, message: /5 scrapes of \/metrics a second/ })
  }
  t.equal(logs.records.filter((r) => /METRICS_SCRAPES_PER_SECOND/.test(String(r.msg))).length, 1, 'one warning, not one a scrape')
  let refusals = refused.length
  let later = await app.inject({ method: 'GET', url: '/metrics' })
  for (let tries = 0; later.statusCode === 429 && tries < 5; tries++) {
    refusals++
    await new Promise((resolve) => setTimeout(resolve, Number(later.headers['retry-after']) * 1000))
    later = await app.inject({ method: 'GET', url: '/metrics' })
  }
  t.equal(later.statusCode, 200, 'a scrape after retry-after is answered')
  // The scrape may have been given the rendering of the burst's second: the registry is read afresh.
  t.equal(value(await app.metrics.registry.metrics(), 'wxtoken_requests_total{route="/metrics",status_code="429"}'), refusals, 'the refusals are counted')
})

t.test('with METRICS_KEY, a scrape needs the key in authorization', async (t) => {
  const key = CALLER_KEYS[0]!
  const { app } = await build(t, { env: { METRICS_KEY: key } })
  // Refusals are answered when the second ends: sent together, they take one second at most.
  const refused = await Promise.all([undefined, 'Bearer not-the-metrics-key-at-all', `Bearer ${key}x`, key.slice(0, -1)].map(async (authorization) =>
    ({ authorization, res: await app.inject({ method: 'GET', url: '/metrics', headers: authorization === undefined ? {} : { authorization } }) })))
  for (const { authorization, res } of refused) {
    t.equal(res.statusCode, 401, `${authorization === undefined ? 'no key' : 'a wrong key'}: HTTP 401`)
    t.equal(res.headers['www-authenticate'], 'Bearer')
    t.match(res.json(), { statusCode: 401, apiCode: 2003 })
    t.notOk(res.body.includes(key), 'the answer does not hold the key')
  }
  for (const authorization of [`Bearer ${key}`, key]) {
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization } })
    t.equal(res.statusCode, 200, 'the key, as Prometheus sends it (Bearer) or raw')
    t.match(res.body, /wxtoken_requests_total/)
  }
})

t.test('with METRICS_PORT, /metrics is served on its own listener only, closed with the app', async (t) => {
  const { app } = await build(t, { env: { METRICS_PORT: '0' } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const main = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  t.ok(app.metricsServer, 'a metrics listener')
  const metricsPort = (app.metricsServer!.server.address() as AddressInfo).port
  const own = `http://127.0.0.1:${metricsPort}`

  const scrape = await request(`${own}/metrics`)
  t.equal(scrape.statusCode, 200, 'the metrics port serves /metrics')
  t.match(scrape.headers['content-type'], /text\/plain/)
  t.match(await scrape.body.text(), /wxtoken_requests_total/)

  const onMain = await request(`${main}/metrics`)
  t.equal(onMain.statusCode, 404, 'the main port does not')
  t.match(await onMain.body.json(), { statusCode: 404, apiCode: 1005 })

  for (const [method, path] of [['POST', ROUTE], ['GET', '/health/live'], ['GET', '/docs']] as const) {
    const res = await request(`${own}${path}`, { method, headers: { 'content-type': 'application/json' }, ...(method === 'POST' ? { body: JSON.stringify(body) } : {}) })
    t.equal(res.statusCode, 404, `${method} ${path} is not on the metrics port`)
    t.match(await res.body.json(), { statusCode: 404, apiCode: 1005 })
  }
  const token = await request(`${main}${ROUTE}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId: 'wx123', appSecret: APP_SECRET }) })
  t.match(await token.body.json(), { apiCode: 1002 }, 'the main port still serves the routes')

  const counted = await (await request(`${own}/metrics`)).body.text()
  t.equal(value(counted, 'wxtoken_requests_total{route="/metrics",status_code="200"}'), 1, 'scrapes on the metrics port are counted with the rest')

  await app.close()
  const refused = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const socket = connect(metricsPort, '127.0.0.1', () => { socket.destroy(); resolve(undefined) })
    socket.on('error', resolve)
  })
  t.equal(refused?.code, 'ECONNREFUSED', 'the metrics listener closed with the app')
})

t.test('METRICS_PORT must differ from PORT', async (t) => {
  t.throws(() => loadConfig({ PORT: '9100', METRICS_PORT: '9100' }), /env\/METRICS_PORT must differ from PORT/)
  t.doesNotThrow(() => loadConfig({ PORT: '9100', METRICS_PORT: '9101' }))
})
