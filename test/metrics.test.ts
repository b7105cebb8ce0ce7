import { readFile } from 'node:fs/promises'
import { getHeapStatistics } from 'node:v8'
import t from 'tap'
import { APP_ID, APP_SECRET, OTHER_SECRET, build, post, startMock } from './helpers/build.js'

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
  const { app } = await build(t, { upstream: url })
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
