/**
 * Benchmark (npm run bench builds first): starts Redis, the WeChat stand-in and each server variant in its own
 * process, with the Node flags `npm start` uses, drives them with wrk when it is installed (`apt-get install wrk`; as
 * the hot-path target was measured) or else autocannon (scripts/bench-lib.ts loadRun; BENCH_LOAD=autocannon picks it),
 * each in a process of its own, and prints figures as Markdown:
 * cache hits on both token routes, the ticket route, the signature route, the WeCom token route, WeChat's own
 * GET /cgi-bin/token (WECHAT_COMPAT_API), and an Open Platform component's token and its authorizer's, with the hot cache on and off, against a bare Fastify route (the ceiling); a cold burst of 1,000 concurrent token requests, one of 1,000
 * ticket requests and one of 1,000 WeCom token requests over 3 instances (the WeCom stand-in beside WeChat's, the Open
 * Platform's behind WeChat's); RSS and heap per entry with 10,000 entries of each kind cached, each kind in a fresh
 * process: Official Account tokens, JS-SDK tickets, WeCom tokens of 10,000 applications of WECOM_APPS (passed in a file:
 * the environment takes 128 KiB a variable) and authorizer tokens of 10,000 accounts of one component; and floods of
 * 50,000 requests each naming a random owner: appIds on the token route from one caller and from 500 callers and on the
 * ticket route, WeCom corpIds and secrets, authorizer appIds of a configured component (what upstream calls, Redis keys
 * and memory each costs). Off by default, BENCH_ONLY=crowd: a real caller's requests while a crowd of 1,100
 * connections that never complete a request (silent, then slowloris), each opened again as soon as it is closed, holds
 * a service with MAX_CONNECTIONS=1000: on new connections, on one kept-alive connection, with headers and body 100 ms
 * apart, and on a kept-alive connection idle 2.5 s (past CONNECTION_GRACE_MS) between requests. Off by default,
 * BENCH_ONLY=passthrough: what a passed-through call (WECHAT_PASSTHROUGH) adds to WeChat's own time, one request at a
 * time, against the same call made to the stand-in directly, in interleaved rounds.
 *
 * The hit runs are interleaved: after a warm-up of every server, each round measures the bare route and each case
 * once (starting one case later every round), and a case's ratio is the median of its per-round ratios, so a slow
 * spell of the shared machine moves both sides of a ratio. Their servers preload scripts/gc-agent.js, which counts
 * their garbage collections: each run also reports the GC pauses per request and the scavenges and mark-compacts
 * it took, figures a slow spell moves less than CPU time.
 * Pinned (on a machine of 2 cores or more with taskset, unless BENCH_PIN=0): every server process on the last core, the
 * driver with everything it starts (Redis, the stand-ins, the load generator) on the others, so that the load generator never
 * takes the service's core and a ratio compares the two servers' own CPU.
 * Before and after in one run: BENCH_BASELINE=<dir>, a checkout of an earlier commit built there (`npm ci && npm run
 * build`), adds each hit case run on that build's compiled service, in the same interleaved rounds.
 * Settings: BENCH_ROUNDS (5), BENCH_SECONDS (5 per run), BENCH_CONNECTIONS (50), BENCH_ONLY (hits,cold,memory,flood),
 * BENCH_PIN (1), BENCH_BASELINE (none), BENCH_LOAD (wrk when installed, else autocannon). The scrape section always
 * uses autocannon (for its fixed request rate).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import type autocannon from 'autocannon'
import { Pool } from 'undici'
import { MockOpenPlatform, type MockComponent } from '../src/stand-in/open-platform.js'
import { MockWechat } from '../src/stand-in/wechat.js'
import { MockWecom } from '../src/stand-in/wecom.js'
import { RedisServer } from '../test/helpers/redis-server.js'
import { askAgent, cpuMicros, loadGenerator, loadRun, median, nodeFlags, pinCores, serviceEnv as environment, startServer as start, stopServer, type Server, SECRET, APP, CORP, AGENT_SECRET, INFO, body } from './bench-lib.js'

const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const seconds = Number(process.env.BENCH_SECONDS ?? 5)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const only = new Set((process.env.BENCH_ONLY ?? 'hits,cold,memory,flood').split(','))
const OBSOLETE = '/api/v3/get-wechat-access-token'
const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const SIGNATURE = '/api/v3/get-wechat-jssdk-signature'
const WECOM = '/api/v3/get-wecom-access-token'
const AUTHORIZER = '/api/v3/get-authorizer-access-token'
const COMPONENT_TOKEN = '/api/v3/get-component-access-token'
/** The component and the account that authorized it whose tokens the hit runs ask for. */
const HIT_COMPONENT = 'wxbe0c0be0c0be0c02'
const HIT_AUTHORIZER = 'wxa0a0a0a0a0a0a0a2'
/** WeChat's own token endpoint (a GET: its query names the app), as a WeChat SDK pointed at the service calls it. */
const WECHAT_TOKEN = '/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=0123456789abcdef0123456789abcdef'
/** The body each route is driven with. */
const bodies: Record<string, string> = {
  [INFO]: body,
  [OBSOLETE]: body,
  [TICKET]: body,
  [SIGNATURE]: JSON.stringify({ appId: APP, appSecret: SECRET, url: 'https://shop.example.com/cart?item=1&from=share' }),
  [WECOM]: JSON.stringify({ corpId: CORP, corpSecret: AGENT_SECRET }),
  [AUTHORIZER]: JSON.stringify({ componentAppId: HIT_COMPONENT, authorizerAppId: HIT_AUTHORIZER }),
  [COMPONENT_TOKEN]: JSON.stringify({ componentAppId: HIT_COMPONENT })
}
/** The cores the servers run on, and the driver's (with Redis, the stand-ins and the load generator): undefined when not pinned. */
const pinned = pinCores(process.env.BENCH_PIN !== '0')
/** BENCH_BASELINE: an earlier build to measure beside this one. */
const baseline = process.env.BENCH_BASELINE

/** scripts/gc-agent.js of this checkout, preloaded into the servers of the hit runs to count their collections. */
const gcAgent = pathToFileURL(resolve('scripts/gc-agent.js')).href

/**
 * A server process: this build's, or (`dir`) the build of another checkout, pinned to the server core; `counted`:
 * with the GC agent.
 */
async function startServer (env: Record<string, string>, dir = '.', counted = false): Promise<Server> {
  return await start(env, { dir, pinned, ...(counted ? { flags: ['--import', gcAgent], stdin: true } : {}) })
}

interface GcTotals { scavenges: number, scavengeMs: number, markCompacts: number, markCompactMs: number }
const gcTotals = async (server: Server): Promise<GcTotals> => await askAgent(server, 'gc', 'gc', 'counted') as unknown as GcTotals

/** A line of /proc/<pid>/status, in MB (VmRSS, VmHWM). */
function statusMb (pid: number, field: string): number {
  const kb = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  return Number(kb ?? 0) / 1024
}

/** The heap after a full collection (the server collects and prints it on SIGUSR2), and the RSS once it settled. */
async function afterGc (server: Server): Promise<{ rss: number, heapUsed: number }> {
  const line = once(server.child.stderr!, 'data') as Promise<[Buffer]>
  server.child.kill('SIGUSR2')
  const [chunk] = await line
  const { heapUsed } = JSON.parse(chunk.toString().trim().split('\n').at(-1) ?? '{}') as { heapUsed: number }
  await sleep(1000) // V8 returns freed pages from a background thread
  return { rss: statusMb(server.child.pid!, 'VmRSS'), heapUsed: heapUsed / 1048576 }
}

/** One measured run; the GC figures of a server with the GC agent (per request: µs of pauses; scavenges and mark-compacts). */
interface Run { rps: number, p50: number, p99: number, cpuPerRequest: number, errors: number, gc?: { micros: number, scavenges: number, markCompacts: number } }

async function load (server: Server, path: string, warmup: number, counted = false): Promise<Run> {
  const payload = bodies[path] // none: a GET
  await loadRun(server.base + path, warmup, payload, connections)
  const gcBefore = counted ? await gcTotals(server) : undefined
  const cpuBefore = cpuMicros(server.child.pid!)
  const result = await loadRun(server.base + path, seconds, payload, connections)
  const cpuPerRequest = (cpuMicros(server.child.pid!) - cpuBefore) / result.total
  const run: Run = { rps: result.rps, p50: result.p50, p99: result.p99, cpuPerRequest, errors: result.errors }
  if (gcBefore !== undefined) {
    const after = await gcTotals(server)
    const pauses = after.scavengeMs - gcBefore.scavengeMs + after.markCompactMs - gcBefore.markCompactMs
    run.gc = {
      micros: pauses * 1000 / result.total,
      scavenges: (after.scavenges - gcBefore.scavenges) / result.total,
      markCompacts: (after.markCompacts - gcBefore.markCompacts) / result.total
    }
  }
  return run
}

const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 })
/** The median over runs of a GC figure, per `per` requests (NaN without the agent's counts). */
const gcMedian = (runs: Run[], field: 'micros' | 'scavenges' | 'markCompacts', per: number): number => median(runs.map((run) => (run.gc?.[field] ?? NaN) * per))
const redis = await RedisServer.start()
const mock = new MockWechat({ autoRegister: true })
const upstream = await mock.start()
// The Open Platform's calls, on WeChat's host as in production; its components are added by the sections that use them.
const platform = new MockOpenPlatform({ wechat: mock, startPushDelayMs: 50 })
mock.delegateComponents(platform)
const wecomMock = new MockWecom({ corps: { [CORP]: { 1000002: AGENT_SECRET } } })
const wecomUpstream = await wecomMock.start()
const serviceEnv = (hotMs: string) => environment({ redis: redis.url, wechat: upstream, wecom: wecomUpstream, wecomCorp: CORP, wecomSecret: AGENT_SECRET }, hotMs)
console.log(`\n${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, node flags: ${nodeFlags.join(' ') || 'none'}, ` +
  (pinned ? `servers pinned to core ${pinned.server}, the load generator, Redis and the stand-ins to ${pinned.driver}` : 'not pinned'))

/** A component as WeChat's console shows it (for the Open Platform stand-in and WECHAT_COMPONENTS). */
const component = (appId: string): MockComponent =>
  ({ appId, appSecret: appId.slice(2).repeat(2), token: 'BenchPushToken', encodingAESKey: 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG' })
/** The service's settings for one component, its routes open without caller keys. */
const componentEnv = (c: MockComponent) => ({ WECHAT_COMPONENTS: JSON.stringify([c]), COMPONENT_ROUTES_WITHOUT_KEYS: 'true' })
/** Points the component's pushes at the service and pushes a component_verify_ticket: its token can be fetched from then on. */
async function pushTicketTo (server: Server, c: MockComponent): Promise<void> {
  platform.setCallback(c.appId, `${server.base}/wechat/components/${c.appId}/events`)
  if (!await platform.pushTicket(c.appId)) {
    const { status, answer, error } = platform.pushes(c.appId).at(-1)!
    throw new Error(`the service did not take the ticket of ${c.appId}: ${JSON.stringify({ status, answer, error })}`)
  }
}

if (only.has('hits')) {
  // A component with one authorized account, for its token and the account's.
  const hitComponent = component(HIT_COMPONENT)
  platform.setComponent(hitComponent)
  platform.authorize(HIT_COMPONENT, HIT_AUTHORIZER)
  const hitEnv = (hotMs: string) => ({ ...serviceEnv(hotMs), ...componentEnv(hitComponent) })
  const bare = await startServer({ BENCH_VARIANT: 'bare' }, '.', true)
  const hot = await startServer(hitEnv('2000'), '.', true)
  const cold = await startServer(hitEnv('0'), '.', true)
  // The earlier build, on keys of its own (its entries may be written in another shape).
  const before = baseline === undefined
    ? undefined
    : { hot: await startServer({ ...hitEnv('2000'), REDIS_KEY_PREFIX: 'baseline' }, baseline, true), cold: await startServer({ ...hitEnv('0'), REDIS_KEY_PREFIX: 'baseline' }, baseline, true) }
  for (const server of [hot, ...(before ? [before.hot] : [])]) await pushTicketTo(server, hitComponent)
  for (const server of [hot, cold, ...(before ? [before.hot, before.cold] : [])]) {
    for (const path of [INFO, OBSOLETE, TICKET, SIGNATURE, WECOM, COMPONENT_TOKEN, AUTHORIZER]) {
      const answer = await (await fetch(server.base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[path]! })).json() as { statusCode: number, apiCode?: number }
      if (answer.statusCode !== 200) throw new Error(`${path} was not answered with a credential to cache: apiCode ${String(answer.apiCode)}`)
    }
    await fetch(server.base + WECHAT_TOKEN)
  }
  const cases = [
    { name: 'bare Fastify route (ceiling)', server: bare, path: INFO },
    { name: 'cache hit, current route, hot cache on', server: hot, path: INFO },
    { name: 'cache hit, obsolete route, hot cache on', server: hot, path: OBSOLETE },
    { name: 'cached ticket, hot cache on', server: hot, path: TICKET },
    { name: 'signature, hot cache on', server: hot, path: SIGNATURE },
    { name: 'WeCom token, hot cache on', server: hot, path: WECOM },
    { name: 'GET /cgi-bin/token, hot cache on', server: hot, path: WECHAT_TOKEN },
    { name: 'component token, hot cache on', server: hot, path: COMPONENT_TOKEN },
    { name: 'authorizer token, hot cache on', server: hot, path: AUTHORIZER },
    { name: 'cache hit, current route, hot cache off', server: cold, path: INFO },
    { name: 'cache hit, obsolete route, hot cache off', server: cold, path: OBSOLETE },
    { name: 'cached ticket, hot cache off', server: cold, path: TICKET },
    { name: 'signature, hot cache off', server: cold, path: SIGNATURE },
    { name: 'WeCom token, hot cache off', server: cold, path: WECOM },
    { name: 'GET /cgi-bin/token, hot cache off', server: cold, path: WECHAT_TOKEN },
    { name: 'component token, hot cache off', server: cold, path: COMPONENT_TOKEN },
    { name: 'authorizer token, hot cache off', server: cold, path: AUTHORIZER }
  ]
  if (before) {
    // The same cases on the earlier build (those of its routes that exist: a case it cannot answer counts errors).
    for (const c of cases.slice(1)) cases.push({ name: `before: ${c.name}`, server: c.server === hot ? before.hot : before.cold, path: c.path })
  }
  const runs = cases.map((): Run[] => [])
  for (const c of cases) await load(c.server, c.path, 3) // every server warmed up before the first round
  for (let round = 0; round < rounds; round++) {
    // Each round starts one case later, so no case always follows the same one.
    for (let k = 0; k < cases.length; k++) {
      const i = (round + k) % cases.length
      runs[i]!.push(await load(cases[i]!.server, cases[i]!.path, 1, true))
    }
  }
  for (const server of [bare, hot, cold, ...(before ? [before.hot, before.cold] : [])]) await stopServer(server)

  console.log(`\n${loadGenerator} (own process, one thread), ${connections} connections; ${rounds} interleaved rounds of ${seconds} s per case (each after a 1 s warm-up); medians over the rounds\n`)
  console.log('| run | requests/s | p50 ms | p99 ms | ratio to bare (median) | ratio per round | service CPU µs per request | CPU ratio (bare / run) | ' +
    'GC pauses µs per request | scavenges per 1,000 requests | mark-compacts per 100,000 | errors |')
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|')
  const ceiling = runs[0]!
  for (const [i, c] of cases.entries()) {
    const mine = runs[i]!
    const ratios = mine.map((run, r) => run.rps / ceiling[r]!.rps)
    const cpu = median(mine.map((run) => run.cpuPerRequest))
    console.log(`| ${c.name} | ${fmt(median(mine.map((run) => run.rps)))} | ${median(mine.map((run) => run.p50))} | ` +
      `${median(mine.map((run) => run.p99))} | ${median(ratios).toFixed(2)} | ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')} | ` +
      `${cpu.toFixed(1)} | ${(median(ceiling.map((run) => run.cpuPerRequest)) / cpu).toFixed(2)} | ` +
      `${gcMedian(mine, 'micros', 1).toFixed(1)} | ${gcMedian(mine, 'scavenges', 1000).toFixed(2)} | ${gcMedian(mine, 'markCompacts', 100_000).toFixed(1)} | ` +
      `${mine.reduce((sum, run) => sum + run.errors, 0)} |`)
  }
}

if (only.has('cold')) {
  const server = await startServer(serviceEnv('2000'))
  mock.inject({ fault: { kind: 'latency', ms: 100 } })
  const appId = 'wx00000000c01db00f'
  const pool = new Pool(server.base, { connections: 1000 })
  const callsBefore = mock.calls('stable_token')
  const started = performance.now()
  let firstToken = 0
  const answers = await Promise.all(Array.from({ length: 1000 }, async () => {
    const res = await pool.request({ method: 'POST', path: INFO, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId, appSecret: SECRET }) })
    const envelope = await res.body.json() as { statusCode: number }
    if (firstToken === 0 && envelope.statusCode === 200) firstToken = performance.now() - started
    return envelope.statusCode
  }))
  const burstMs = performance.now() - started
  const coldCalls = mock.calls('stable_token') - callsBefore
  mock.clearFaults()
  await pool.close()
  await stopServer(server)
  console.log(`\ncold burst: 1,000 concurrent requests for an uncached app (upstream latency 100 ms): ${coldCalls} upstream call(s), ` +
    `first token after ${firstToken.toFixed(0)} ms, all answered after ${burstMs.toFixed(0)} ms, ${answers.filter((s) => s === 200).length} got a token`)

  // The same herd for a ticket of an app with nothing cached: one token call, then one getticket, on three instances.
  const fleet = [await startServer(serviceEnv('2000')), await startServer(serviceEnv('2000')), await startServer(serviceEnv('2000'))]
  mock.inject({ fault: { kind: 'latency', ms: 100 } })
  const ticketApp = 'wx00000000c01d7e7e'
  const pools = fleet.map((instance) => new Pool(instance.base, { connections: 400 }))
  const tokensBefore = mock.calls('stable_token')
  const ticketsBefore = mock.calls('getticket')
  const ticketStarted = performance.now()
  const ticketAnswers = await Promise.all(Array.from({ length: 1000 }, async (_, i) => {
    const res = await pools[i % 3]!.request({ method: 'POST', path: TICKET, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId: ticketApp, appSecret: SECRET }) })
    return (await res.body.json() as { statusCode: number }).statusCode
  }))
  const ticketMs = performance.now() - ticketStarted
  mock.clearFaults()
  await Promise.all(pools.map(async (pool) => { await pool.close() }))
  for (const instance of fleet) await stopServer(instance)
  console.log('\ncold ticket burst: 1,000 concurrent ticket requests over 3 instances for an app with nothing cached (upstream latency 100 ms): ' +
    `${mock.calls('stable_token') - tokensBefore} token call(s) and ${mock.calls('getticket') - ticketsBefore} getticket call(s), ` +
    `all answered after ${ticketMs.toFixed(0)} ms, ${ticketAnswers.filter((s) => s === 200).length} got a ticket`)

  // The same herd for a WeCom application with nothing cached, on three instances.
  // A key prefix of its own: the hit runs cached this application's token under the default one.
  const wecomEnv = { ...serviceEnv('2000'), REDIS_KEY_PREFIX: 'wecomcold' }
  const wecomFleet = [await startServer(wecomEnv), await startServer(wecomEnv), await startServer(wecomEnv)]
  wecomMock.inject({ fault: { kind: 'latency', ms: 100 } })
  const wecomPools = wecomFleet.map((instance) => new Pool(instance.base, { connections: 400 }))
  const gettokenBefore = wecomMock.calls('gettoken')
  const wecomStarted = performance.now()
  const wecomAnswers = await Promise.all(Array.from({ length: 1000 }, async (_, i) => {
    const res = await wecomPools[i % 3]!.request({ method: 'POST', path: WECOM, headers: { 'content-type': 'application/json' }, body: bodies[WECOM]! })
    return (await res.body.json() as { statusCode: number }).statusCode
  }))
  const wecomMs = performance.now() - wecomStarted
  wecomMock.clearFaults()
  await Promise.all(wecomPools.map(async (pool) => { await pool.close() }))
  for (const instance of wecomFleet) await stopServer(instance)
  console.log('\ncold WeCom burst: 1,000 concurrent requests over 3 instances for an application with nothing cached (upstream latency 100 ms): ' +
    `${wecomMock.calls('gettoken') - gettokenBefore} gettoken call(s), all answered after ${wecomMs.toFixed(0)} ms, ` +
    `${wecomAnswers.filter((s) => s === 200).length} got a token`)
}

/**
 * POSTs `count` requests to `path`, `concurrency` at a time, the i-th with body(i), over `pools` in turn (one per
 * caller address); the answers counted by apiCode (0: answered 200).
 */
async function postAll (pools: Pool[], path: string, count: number, body: (i: number) => string, concurrency: number): Promise<Map<number, number>> {
  const apiCodes = new Map<number, number>()
  for (let sent = 0; sent < count; sent += concurrency) {
    await Promise.all(Array.from({ length: Math.min(concurrency, count - sent) }, async (_, j) => {
      const res = await pools[(sent + j) % pools.length]!.request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: body(sent + j) })
      const { apiCode = 0 } = await res.body.json() as { apiCode?: number }
      apiCodes.set(apiCode, (apiCodes.get(apiCode) ?? 0) + 1)
    }))
  }
  return apiCodes
}
const tallyCodes = (apiCodes: Map<number, number>) => [...apiCodes].sort((a, b) => b[1] - a[1]).map(([code, n]) => `${fmt(n)} × ${code || 200}`).join(', ')
const mb = (n: number) => n.toFixed(1)
if (only.has('memory')) {
  const entries = 10_000
  const appId = (i: number, pad: string) => `wx${i.toString(16).padStart(16, pad)}`
  // WeCom: 1,000 corps of 10 applications each (every request compares the secret with each of its corp's).
  const wecomApps: Record<string, Record<string, string>> = {}
  const agents = Array.from({ length: entries }, (_, i) => {
    const corpId = `ww${Math.floor(i / 10).toString(16).padStart(16, '0')}`
    const agentId = String(1000000 + (i % 10))
    const secret = `BenchWecomSecret${String(i).padStart(27, '0')}`
    wecomMock.setApplication(corpId, agentId, secret)
    ;(wecomApps[corpId] ??= {})[agentId] = secret
    return { corpId, corpSecret: secret }
  })
  const dir = mkdtempSync(join(tmpdir(), 'bench-'))
  const wecomFile = join(dir, 'wecom-apps.json')
  writeFileSync(wecomFile, JSON.stringify({ WECOM_APPS: JSON.stringify(wecomApps) }))
  // 10,000 accounts that authorized one component; the service recovers their refresh tokens from WeChat's list.
  const authorizing = component('wxbe0c0be0c0be0c01')
  platform.setComponent(authorizing)
  for (let i = 0; i < entries; i++) platform.authorize(authorizing.appId, appId(i, 'a'))
  interface Kind { name: string, path: string, body: (i: number) => string, env?: Record<string, string>, prepare?: (server: Server) => Promise<void> }
  const kinds: Kind[] = [
    { name: 'Official Account tokens (apps)', path: INFO, body: (i) => JSON.stringify({ appId: appId(i, '7'), appSecret: SECRET }) },
    { name: 'JS-SDK tickets (apps, each with its token)', path: TICKET, body: (i) => JSON.stringify({ appId: appId(i, '8'), appSecret: SECRET }) },
    { name: 'WeCom tokens (applications of WECOM_APPS, 1,000 corps of 10)', path: WECOM, body: (i) => JSON.stringify(agents[i]), env: { BENCH_ENV_FILE: wecomFile } },
    {
      name: 'authorizer tokens (accounts of one component)',
      path: AUTHORIZER,
      body: (i) => JSON.stringify({ componentAppId: authorizing.appId, authorizerAppId: appId(i, 'a') }),
      env: componentEnv(authorizing),
      prepare: async (server) => { await pushTicketTo(server, authorizing) }
    }
  ]
  console.log(`\nmemory: a fresh service process per kind filled with ${fmt(entries)} entries (200 concurrent cold requests at a time); ` +
    'RSS read 10 s after the fill with nothing forced, then 1 s after a full GC; heap per entry is the heap after GC less the idle one\n')
  console.log('| kind | answers | fill s | peak RSS MB | RSS 10 s after MB | RSS after GC MB | heap after GC MB | idle RSS / heap MB | KB of heap per entry |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const [index, kind] of kinds.entries()) {
    // One caller filling 10,000 apps: past the default UNVERIFIED_CHECKS_PER_CALLER, which this section does not measure.
    const server = await startServer({ ...serviceEnv('2000'), UNVERIFIED_CHECKS_PER_CALLER: '100000', REDIS_KEY_PREFIX: `memory${index}`, ...kind.env })
    const pid = server.child.pid!
    const idle = await afterGc(server)
    await kind.prepare?.(server)
    const fill = new Pool(server.base, { connections: 200 })
    const started = performance.now()
    const answers = await postAll([fill], kind.path, entries, kind.body, 200)
    const took = (performance.now() - started) / 1000
    await fill.close()
    const peak = statusMb(pid, 'VmHWM')
    await sleep(10_000)
    const settled = statusMb(pid, 'VmRSS')
    const filled = await afterGc(server)
    await stopServer(server)
    console.log(`| ${kind.name} | ${tallyCodes(answers)} | ${took.toFixed(1)} | ${mb(peak)} | ${mb(settled)} | ${mb(filled.rss)} | ${mb(filled.heapUsed)} | ` +
      `${mb(idle.rss)} / ${mb(idle.heapUsed)} | ${((filled.heapUsed - idle.heapUsed) * 1024 / entries).toFixed(2)} |`)
  }
  rmSync(dir, { recursive: true })
}

if (only.has('flood')) {
  // Real WeChat answers 40013 to an appId it does not know: a stand-in that knows none.
  const strict = new MockWechat()
  const strictBase = await strict.start()
  const requests = 50_000
  const randomAppId = (): string => `wx${Math.floor(Math.random() * 2 ** 52).toString(16).padStart(16, '0')}`
  // A component no account authorized: every authorizer named is a made-up one.
  const lonely = component('wxf100df100df100d1')
  platform.setComponent(lonely)
  interface Flood {
    name: string
    path: string
    callers: number
    body: () => string
    env: Record<string, string>
    /** The stand-in's counts of the upstream calls this flood could cost. */
    calls: () => Record<string, number>
    prepare?: (server: Server) => Promise<void>
  }
  const cases: Flood[] = [
    { name: 'token route, random appIds, one caller', path: INFO, callers: 1, body: () => JSON.stringify({ appId: randomAppId(), appSecret: SECRET }), env: { WECHAT_API_BASE: strictBase }, calls: () => ({ stable_token: strict.calls('stable_token') }) },
    { name: 'token route, random appIds, 500 callers (127.0.x.y)', path: INFO, callers: 500, body: () => JSON.stringify({ appId: randomAppId(), appSecret: SECRET }), env: { WECHAT_API_BASE: strictBase }, calls: () => ({ stable_token: strict.calls('stable_token') }) },
    { name: 'ticket route, random appIds, one caller', path: TICKET, callers: 1, body: () => JSON.stringify({ appId: randomAppId(), appSecret: SECRET }), env: { WECHAT_API_BASE: strictBase }, calls: () => ({ stable_token: strict.calls('stable_token'), getticket: strict.calls('getticket') }) },
    {
      name: 'WeCom token route, random corpIds and secrets (every other request on the configured corp), one caller',
      path: WECOM,
      callers: 1,
      body: () => JSON.stringify({ corpId: Math.random() < 0.5 ? CORP : `ww${randomAppId().slice(2)}`, corpSecret: randomBytes(32).toString('base64url') }),
      env: {},
      calls: () => ({ gettoken: wecomMock.calls('gettoken') })
    },
    {
      name: 'authorizer token route, random authorizer appIds of a configured component, one caller',
      path: AUTHORIZER,
      callers: 1,
      body: () => JSON.stringify({ componentAppId: lonely.appId, authorizerAppId: randomAppId() }),
      env: componentEnv(lonely),
      calls: () => Object.fromEntries((['api_component_token', 'api_authorizer_token', 'api_get_authorizer_list', 'api_start_push_ticket'] as const)
        .map((endpoint) => [endpoint, platform.calls(endpoint)])),
      prepare: async (server) => { await pushTicketTo(server, lonely) }
    }
  ]
  console.log(`\nfloods of ${fmt(requests)} requests (500 at a time), each naming a random owner; a fresh service process each, its own Redis key prefix\n`)
  console.log('| flood | s | upstream calls | answers (apiCode) | Redis keys left (longest TTL s, without a TTL) | Redis used_memory growth MB | ' +
    'service peak RSS MB | RSS after GC MB | heap after GC at half / at the end MB | idle RSS / heap MB |')
  console.log('|---|---|---|---|---|---|---|---|---|---|')
  for (const [index, flood] of cases.entries()) {
    const prefix = `flood${index}`
    const server = await startServer({ ...serviceEnv('2000'), REDIS_KEY_PREFIX: prefix, ...flood.env })
    const pid = server.child.pid!
    const idle = await afterGc(server)
    await flood.prepare?.(server)
    const client = redis.client()
    const usedMb = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1] ?? 0) / 1048576
    const usedBefore = await usedMb()
    const callsBefore = flood.calls()
    const pools = Array.from({ length: flood.callers }, (_, i) =>
      new Pool(server.base, { connections: Math.max(1, Math.floor(100 / flood.callers)), localAddress: `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}` }))
    let started = performance.now()
    const firstHalf = await postAll(pools, flood.path, requests / 2, flood.body, 500)
    let took = performance.now() - started
    const half = await afterGc(server)
    started = performance.now()
    const secondHalf = await postAll(pools, flood.path, requests / 2, flood.body, 500)
    took += performance.now() - started
    await Promise.all(pools.map(async (pool) => { await pool.close() }))
    const calls = flood.calls()
    const peak = statusMb(pid, 'VmHWM')
    const after = await afterGc(server)
    // Each key with its TTL (-1: none); one that expired since it was listed (-2) is not counted.
    const keys = (await Promise.all((await client.keys(`${prefix}:*`)).map(async (key) => [key, await client.pttl(key)] as const))).filter(([, ttl]) => ttl !== -2)
    const lasting = keys.filter(([, ttl]) => ttl === -1).map(([key]) => key)
    const grown = await usedMb() - usedBefore
    const used = Math.abs(grown) < 0.05 ? 0 : grown
    client.disconnect()
    await stopServer(server)
    const answers = new Map(firstHalf)
    for (const [code, n] of secondHalf) answers.set(code, (answers.get(code) ?? 0) + n)
    console.log(`| ${flood.name} | ${(took / 1000).toFixed(1)} | ${Object.entries(calls).map(([endpoint, n]) => `${fmt(n - callsBefore[endpoint]!)} ${endpoint}`).join(', ')} | ` +
      `${tallyCodes(answers)} | ${fmt(keys.length)} (${fmt(Math.max(0, ...keys.map(([, ttl]) => ttl)) / 1000)} s, ${lasting.length}${lasting.length > 0 ? `: ${lasting.slice(0, 3).join(' ')}` : ''}) | ${mb(used)} | ` +
      `${mb(peak)} | ${mb(after.rss)} | ${mb(half.heapUsed)} / ${mb(after.heapUsed)} | ${mb(idle.rss)} / ${mb(idle.heapUsed)} |`)
  }
  await strict.close()
}

if (only.has('crowd')) {
  const crowdSize = 1100
  const attempts = 200
  const paceMs = 50
  /** Waits until `ms` after `from`, so that the attempts are spread over the run at a steady pace. */
  const pace = async (from: number, ms: number): Promise<void> => { await sleep(Math.max(0, from + ms - performance.now())) }
  /** One request on a connection of its own: the envelope's statusCode, or how it failed (reset, timeout). */
  const freshRequest = async (base: string): Promise<string> => await new Promise((resolve) => {
    const req = httpRequest(`${base}${INFO}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', connection: 'close' }, timeout: 10_000 }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => { resolve(String((JSON.parse(text) as { statusCode: number }).statusCode)) })
      res.on('error', () => { resolve('reset') })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', (err) => { resolve(err.message === 'timeout' ? 'timeout' : 'reset') })
    req.end(body)
  })
  /** One request on a connection of its own, its headers and body written 100 ms apart: the envelope's statusCode, or how it failed. */
  const splitRequest = async (port: number): Promise<string> => await new Promise((resolve) => {
    const head = `POST ${INFO} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`
    const socket = connect(port, '127.0.0.1')
    let text = ''
    const timer = setTimeout(() => { socket.destroy(new Error('timeout')) }, 10_000)
    let failure = 'reset'
    socket.on('connect', () => {
      socket.write(head)
      setTimeout(() => { if (!socket.destroyed) socket.write(body) }, 100)
    })
    socket.on('data', (chunk: Buffer) => { text += chunk.toString() })
    socket.on('error', (err) => { failure = err.message === 'timeout' ? 'timeout' : 'reset' })
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(/"statusCode":(\d+)/.exec(text)?.[1] ?? failure)
    })
  })
  const splitAttempts = 50
  const idleAttempts = 8
  const idleMs = 2500
  const tally = (outcomes: Map<string, number>) => `${outcomes.get('200') ?? 0} answered${[...outcomes].filter(([k]) => k !== '200').map(([k, n]) => `, ${n} ${k}`).join('')}`
  for (const mode of ['silent', 'slowloris']) {
    const server = await startServer({ ...serviceEnv('2000'), MAX_CONNECTIONS: '1000' })
    const quiet: number[] = []
    for (let i = 0; i < 50; i++) {
      const begun = performance.now()
      await freshRequest(server.base)
      quiet.push(performance.now() - begun)
    }
    const port = new URL(server.base).port
    const crowd = spawn(process.execPath, ['scripts/bench-crowd.js', port, String(crowdSize), mode], { stdio: ['ignore', 'pipe', 'ignore'] })
    await once(crowd.stdout!, 'data')
    await sleep(2000)
    const outcomes = new Map<string, number>()
    const latencies: number[] = []
    const started = performance.now()
    for (let i = 0; i < attempts; i++) {
      await pace(started, i * paceMs)
      const begun = performance.now()
      const outcome = await freshRequest(server.base)
      if (outcome === '200') latencies.push(performance.now() - begun)
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
    const took = (performance.now() - started) / 1000
    // The same caller on one kept-alive connection (reopened by the pool when it is closed).
    const kept = new Pool(server.base, { connections: 1 })
    const keptOutcomes = new Map<string, number>()
    const keptStarted = performance.now()
    for (let i = 0; i < attempts; i++) {
      await pace(keptStarted, i * paceMs)
      const outcome = await kept.request({ method: 'POST', path: INFO, headers: { 'content-type': 'application/json' }, body, headersTimeout: 10_000 })
        .then(async (res) => String((await res.body.json() as { statusCode: number }).statusCode), (err: Error & { code?: string }) => err.code ?? err.name)
      keptOutcomes.set(outcome, (keptOutcomes.get(outcome) ?? 0) + 1)
    }
    await kept.close()
    const splitOutcomes = new Map<string, number>()
    for (let i = 0; i < splitAttempts; i++) {
      const outcome = await splitRequest(Number(port))
      splitOutcomes.set(outcome, (splitOutcomes.get(outcome) ?? 0) + 1)
    }
    // A kept-alive connection idle past CONNECTION_GRACE_MS between requests: the pool opens another if it was closed.
    const idle = new Pool(server.base, { connections: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 })
    let idleConnections = 0
    idle.on('connect', () => { idleConnections++ })
    const idleOutcomes = new Map<string, number>()
    for (let i = 0; i < idleAttempts; i++) {
      if (i > 0) await sleep(idleMs)
      const outcome = await idle.request({ method: 'POST', path: INFO, headers: { 'content-type': 'application/json' }, body, headersTimeout: 10_000 })
        .then(async (res) => String((await res.body.json() as { statusCode: number }).statusCode), (err: Error & { code?: string }) => err.code ?? err.name)
      idleOutcomes.set(outcome, (idleOutcomes.get(outcome) ?? 0) + 1)
    }
    await idle.close()
    const opened = once(crowd.stdout!, 'data') as Promise<[Buffer]>
    crowd.kill('SIGTERM')
    const [count] = await opened
    await stopServer(server)
    const answered = outcomes.get('200') ?? 0
    const sorted = latencies.sort((a, b) => a - b)
    const percentile = (p: number): string => sorted.length === 0 ? '-' : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!.toFixed(1)
    console.log(`\ncrowd of ${fmt(crowdSize)} ${mode} connections, each opened again as soon as it is closed, against MAX_CONNECTIONS=1000: ` +
      `a caller's ${attempts} requests, one every ${paceMs} ms (or after the previous answer), each on a new connection: ${answered} answered (${(100 * answered / attempts).toFixed(1)} %), ` +
      `${[...outcomes].filter(([k]) => k !== '200').map(([k, n]) => `${n} ${k}`).join(', ') || 'no failure'}, in ${took.toFixed(1)} s; ` +
      `answer latency p50 ${percentile(0.5)} ms, p99 ${percentile(0.99)} ms (${median(quiet).toFixed(1)} ms p50 without the crowd); then ${attempts} on one kept-alive connection: ` +
      `${keptOutcomes.get('200') ?? 0} answered${[...keptOutcomes].filter(([k]) => k !== '200').map(([k, n]) => `, ${n} ${k}`).join('')}; ` +
      `the crowd opened ${fmt(Number(count.toString().trim()))} connections in all`)
    console.log(`the same crowd (${mode}): ${splitAttempts} requests on new connections with their headers and body 100 ms apart: ${tally(splitOutcomes)}; ` +
      `${idleAttempts} on a kept-alive connection idle ${idleMs / 1000} s between requests: ${tally(idleOutcomes)}, on ${idleConnections} connection${idleConnections === 1 ? '' : 's'}`)
  }
}

/**
 * BENCH_ONLY=scrape (not run by default; about three minutes): the token route at a steady BENCH_SCRAPE_RATE (2000)
 * requests a second with 3,000 apps cached, alone and while 20 connections loop on GET /metrics, with /metrics on the
 * main port and on its own (METRICS_PORT); the service's CPU, and what the loop got.
 */
if (only.has('scrape')) {
  const apps = 3000
  const rate = Number(process.env.BENCH_SCRAPE_RATE ?? 2000)
  const scrapers = 20
  /** autocannon's CLI in its own process, for `duration` seconds: a steady rate of token requests, or looping scrapes. */
  async function drive (args: string[], duration: number): Promise<autocannon.Result> {
    const child = spawn(process.execPath, ['node_modules/autocannon/autocannon.js', '--json', '-p', '1', '-d', String(duration), ...args],
      { stdio: ['ignore', 'pipe', 'ignore'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    const [code] = await once(child, 'close') as [number]
    if (code !== 0) throw new Error(`autocannon exited with ${code}`)
    return JSON.parse(out.trim().split('\n').at(-1)!) as autocannon.Result
  }
  const tokenArgs = (server: Server) => ['-c', '10', '-R', String(rate), '-m', 'POST', '-H', 'content-type=application/json', '-b', body, server.base + INFO]
  const rows: string[] = []
  const variants: Array<{ name: string, env: Record<string, string> }> = [
    { name: 'on the main port', env: {} },
    { name: 'on its own port (METRICS_PORT)', env: { METRICS_PORT: '0' } }
  ]
  for (const [index, variant] of variants.entries()) {
    // A key prefix of its own: each variant fetches its apps' tokens and tickets, and spends their quota.
    const server = await startServer({ ...serviceEnv('2000'), UNVERIFIED_CHECKS_PER_CALLER: '100000', REDIS_KEY_PREFIX: `scrape${index}`, ...variant.env })
    if ('METRICS_PORT' in variant.env && server.metricsBase === undefined) {
      await stopServer(server)
      rows.push(`| /metrics ${variant.name} | (this build has no METRICS_PORT) | | | | | | | |`)
      continue
    }
    const fill = new Pool(server.base, { connections: 100 })
    for (let i = 0; i < apps; i += 100) {
      await Promise.all(Array.from({ length: 100 }, async (_, j) => {
        const payload = JSON.stringify({ appId: `wx${(i + j).toString(16).padStart(16, '5')}`, appSecret: SECRET })
        for (const path of [INFO, TICKET]) {
          const res = await fill.request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: payload })
          await res.body.dump()
        }
      }))
    }
    await fill.close()
    await fetch(server.base + INFO, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    const scrapeUrl = (server.metricsBase ?? server.base) + '/metrics'
    // A first scrape warms the code up; then three renderings, each past the second a rendering is reused for.
    let exposition = await (await fetch(scrapeUrl)).text()
    const renderings: number[] = []
    for (let i = 0; i < 3; i++) {
      await sleep(1100)
      const started = performance.now()
      exposition = await (await fetch(scrapeUrl)).text()
      renderings.push(performance.now() - started)
    }
    const samples = exposition.split('\n').filter((line) => line !== '' && !line.startsWith('#'))
    const perApp = samples.filter((line) => line.includes('app_id="')).length
    // Looping clients of /metrics, and, on the main port, of /health/live: what any cheap route costs under the same loop.
    const floods = [{ name: `${scrapers} looping scrapers`, url: scrapeUrl }]
    if (server.metricsBase === undefined) floods.push({ name: `(for comparison) ${scrapers} looping clients of GET /health/live`, url: server.base + '/health/live' })
    const runs = new Map<string, Array<{ tokens: autocannon.Result, cpu: number, loop?: autocannon.Result }>>([['alone', []], ...floods.map((f): [string, []] => [f.name, []])])
    /** The token load for `seconds`, with the service's CPU over it (% of one core). */
    const measure = async () => {
      const cpuBefore = cpuMicros(server.child.pid!)
      const startedAt = performance.now()
      const tokens = await drive(tokenArgs(server), seconds)
      return { tokens, cpu: (cpuMicros(server.child.pid!) - cpuBefore) / ((performance.now() - startedAt) * 10) }
    }
    await drive(tokenArgs(server), 2)
    for (let round = 0; round < rounds; round++) {
      runs.get('alone')!.push(await measure())
      for (const flood of floods) {
        const looping = drive(['-c', String(scrapers), flood.url], seconds + 2)
        await sleep(1000)
        const measured = await measure()
        runs.get(flood.name)!.push({ ...measured, loop: await looping })
      }
    }
    await stopServer(server)
    const med = (list: Array<{ tokens: autocannon.Result }>, pick: (r: autocannon.Result) => number) => median(list.map((run) => pick(run.tokens)))
    for (const [name, list] of runs) {
      const loops = list.flatMap((run) => run.loop ? [run.loop] : [])
      const looping = loops.length === 0
        ? ' | '
        : `${fmt(median(loops.map((r) => r.requests.average)))} (${fmt(median(loops.map((r) => r['2xx'] / r.duration)))} with 200) | ` +
          `${(median(loops.map((r) => r.throughput.average)) / 1048576).toFixed(2)}`
      rows.push(`| /metrics ${variant.name}, ${name} | ${fmt(med(list, (r) => r.requests.average))} | ${med(list, (r) => r.latency.p50)} | ` +
        `${med(list, (r) => r.latency.p99)} | ${med(list, (r) => r.latency.max)} | ${list.reduce((sum, run) => sum + run.tokens.errors + run.tokens.non2xx, 0)} | ` +
        `${median(list.map((run) => run.cpu)).toFixed(0)} | ${looping} |`)
    }
    rows.push(`| | a rendering (scrape, warm): ${renderings.map((ms) => ms.toFixed(1)).join(', ')} ms for ${fmt(exposition.length)} bytes, ` +
      `${fmt(samples.length)} series (${fmt(perApp)} per app) | | | | | | | |`)
  }
  console.log(`\ntoken route at a steady ${fmt(rate)} requests/s (autocannon -R, 10 connections, own process) with ${fmt(apps)} apps cached ` +
    `(token and JS-SDK ticket each), alone and while ${scrapers} connections loop on GET /metrics (another autocannon); ` +
    `${rounds} interleaved rounds of ${seconds} s, medians\n`)
  console.log('| case | token requests/s | p50 ms | p99 ms | max ms | token errors | service CPU % | looping requests/s | MB/s answered to the loop |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const row of rows) console.log(row)
}

if (only.has('passthrough')) {
  const KEY = 'bench-caller-key-000000000001'
  const server = await startServer({ ...serviceEnv('2000'), WECHAT_PASSTHROUGH: 'true', AUTH_TOKENS: KEY })
  const token = (await (await fetch(server.base + WECHAT_TOKEN, { headers: { authorization: KEY } })).json() as { access_token: string }).access_token
  const direct = new Pool(upstream, { connections: 1 })
  const through = new Pool(server.base, { connections: 1 })
  const message = JSON.stringify({ touser: 'oBench', msgtype: 'text', text: { content: 'x'.repeat(200) } })
  const calls = [
    { name: 'GET /cgi-bin/menu/get', method: 'GET' as const, path: `/cgi-bin/menu/get?access_token=${token}` },
    { name: 'POST /cgi-bin/message/custom/send (a 260-byte body)', method: 'POST' as const, path: `/cgi-bin/message/custom/send?access_token=${token}`, body: message },
    { name: 'GET /cgi-bin/media/get (a 1 MiB file)', method: 'GET' as const, path: `/cgi-bin/media/get?access_token=${token}&media_id=${mock.putMedia(Buffer.alloc(1048576, 7))}` }
  ]
  const perRound = 1000
  /** Milliseconds of each of `n` calls made one after another on one kept-alive connection. */
  async function timed (pool: Pool, call: typeof calls[number], n: number, auth: boolean): Promise<number[]> {
    const times: number[] = []
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      const res = await pool.request({
        method: call.method,
        path: call.path,
        headers: { ...(auth ? { authorization: KEY } : {}), ...(call.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(call.body === undefined ? {} : { body: call.body })
      })
      await res.body.arrayBuffer()
      if (res.statusCode !== 200) throw new Error(`${call.name}: HTTP ${res.statusCode}`)
      times.push(performance.now() - started)
    }
    return times
  }
  const quantile = (values: number[], q: number): number => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!
  console.log('\npassed-through calls (WECHAT_PASSTHROUGH) against the same calls made to the stand-in directly: one at a time on one ' +
    `kept-alive connection each, ${rounds} interleaved rounds of ${perRound}; the stand-in answers at once, so its time is the machine's\n`)
  console.log('| call | direct p50 ms | through p50 ms | added p50 ms | direct p99 ms | through p99 ms | added p99 ms | added p50 per round |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const call of calls) {
    await timed(direct, call, 200, false)
    await timed(through, call, 200, true)
    const directTimes: number[] = []
    const throughTimes: number[] = []
    const added: number[] = []
    for (let round = 0; round < rounds; round++) {
      const first = round % 2 === 0
      const a = first ? await timed(direct, call, perRound, false) : []
      const b = await timed(through, call, perRound, true)
      const c = first ? [] : await timed(direct, call, perRound, false)
      const d = [...a, ...c]
      directTimes.push(...d)
      throughTimes.push(...b)
      added.push(quantile(b, 0.5) - quantile(d, 0.5))
    }
    const f = (n: number) => n.toFixed(3)
    console.log(`| ${call.name} | ${f(quantile(directTimes, 0.5))} | ${f(quantile(throughTimes, 0.5))} | ${f(median(added))} | ` +
      `${f(quantile(directTimes, 0.99))} | ${f(quantile(throughTimes, 0.99))} | ${f(quantile(throughTimes, 0.99) - quantile(directTimes, 0.99))} | ` +
      `${added.map(f).join(', ')} |`)
  }
  await direct.close()
  await through.close()
  await stopServer(server)
}

await platform.close()
await mock.close()
await wecomMock.close()
await redis.stop()
