/**
 * What a cached token answer costs the server's CPU, and (PROFILE_CPU=1) where it goes: `npm run build`, then
 * `npx tsx scripts/profile-hit.ts`.
 *
 * Starts Redis, the WeChat stand-in (and WeCom's, so the service is configured as in scripts/bench.ts) and three
 * server processes of scripts/bench-server.js, as scripts/bench.ts does (scripts/bench-lib.ts): the bare Fastify route,
 * the service with the hot cache on (HOT_CACHE_MS=2000) and off (HOT_CACHE_MS=0). Each is driven by wrk (or autocannon,
 * as scripts/bench.ts picks it; in a process of its own, 50 connections) on POST /api/v3/get-wechat-access-token-info for a cached app: a 3 s
 * warm-up of every server, then rounds that measure each variant once (1 s warm-up, then PROFILE_SECONDS measured),
 * each round starting one variant later. Reported per variant: the server process's CPU time (utime + stime from
 * /proc/<pid>/stat) over the measured window divided by the requests answered, in µs per request, the median over
 * the rounds, and the median of the per-round differences to the bare route.
 *
 * PROFILE_CPU=1: each server also preloads scripts/profile-agent.js (node --import), which runs V8's CPU profiler
 * (node:inspector) from just before to just after each measured window, on commands sent to its stdin; the
 * .cpuprofile files (one per variant and round; open them in Chrome DevTools or speedscope for a flame graph) go to
 * PROFILE_OUT, or to a temporary directory removed at exit. The summary splits each variant's CPU µs per request by
 * where the main thread's samples were (self time, grouped by file or package; "(idle)" samples left out): a
 * category's share of the samples, pooled over the rounds, times the main thread's CPU µs per request
 * (/proc/<pid>/task/<pid>/stat); the CPU of the process's other threads (GC helpers, libuv's pool), which the
 * profiler does not sample, is a row of its own. Then the functions that cost the most; Node's C++ functions (writev:
 * the socket writes, system time included) are named with the code they work for ("under ioredis"). Code generated
 * without a url is counted by its name (ajv's validateN, fast-json-stringify's anonymousN), or else with its caller.
 * The profiler's own thread is left out of every figure; its sampling of the main thread (every PROFILE_INTERVAL_US)
 * is not, on every variant alike.
 *
 * PROFILE_BASELINE=<dir>: a checkout of an earlier commit, built there (`npm ci && npm run build`); its hot-on and
 * hot-off servers run in the same rounds (on keys of their own), and the summary shows before and after.
 * PROFILE_ROUTE: the service's route driven, token (POST /api/v3/get-wechat-access-token-info, the default), ticket
 * (the JS-SDK ticket) or signature (a wx.config signature); the bare route is driven as for token.
 * PROFILE_PIN=1: the servers on the last core, this process with Redis, the stand-ins and the load generator on the others.
 * Settings: PROFILE_ROUNDS (5), PROFILE_SECONDS (5), PROFILE_CPU (off), PROFILE_OUT (none: a temporary directory),
 * PROFILE_INTERVAL_US (500), PROFILE_BASELINE (none), PROFILE_PIN (off), PROFILE_ROUTE (token).
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { MockWechat } from '../src/stand-in/wechat.js'
import { MockWecom } from '../src/stand-in/wecom.js'
import { RedisServer } from '../test/helpers/redis-server.js'
import { askAgent, cpuMicros, loadGenerator, loadRun, median, nodeFlags, pinCores, serviceEnv, startServer, stopServer, type Server, AGENT_SECRET, CORP, INFO, body } from './bench-lib.js'

const rounds = Number(process.env.PROFILE_ROUNDS ?? 5)
const seconds = Number(process.env.PROFILE_SECONDS ?? 5)
const profiling = process.env.PROFILE_CPU === '1'
const intervalMicros = Number(process.env.PROFILE_INTERVAL_US ?? 500)
const baseline = process.env.PROFILE_BASELINE
const connections = 50
/** PROFILE_ROUTE: the service's route measured (the bare route answers its own, with the token route's body). */
const routes: Record<string, { path: string, body: string }> = {
  token: { path: INFO, body },
  ticket: { path: '/api/v3/get-wechat-jsapi-ticket', body },
  signature: { path: '/api/v3/get-wechat-jssdk-signature', body: JSON.stringify({ ...JSON.parse(body) as object, url: 'https://shop.example.com/cart?item=1&from=share' }) }
}
const route = routes[process.env.PROFILE_ROUTE ?? 'token']
if (route === undefined) throw new Error(`PROFILE_ROUTE is one of ${Object.keys(routes).join(', ')}`)
/** What a variant is driven with: the bare route its own path, the service's the route measured. */
const target = (variant: Variant): { path: string, body: string } => variant.key === 'bare' ? routes.token! : route

const pinned = pinCores(process.env.PROFILE_PIN === '1')

/** Where the profiles go: PROFILE_OUT (kept), or a temporary directory removed when this process exits. */
const temporary = profiling && (process.env.PROFILE_OUT ?? '') === ''
const out = !profiling ? undefined : temporary ? mkdtempSync(join(tmpdir(), 'wxtoken-profile-')) : resolve(process.env.PROFILE_OUT!)
if (out !== undefined) {
  mkdirSync(out, { recursive: true })
  if (temporary) process.once('exit', () => { rmSync(out, { recursive: true, force: true }) })
}

const agent = pathToFileURL(resolve('scripts/profile-agent.js')).href

interface Variant { key: string, name: string, server: Server }
interface Run { rps: number, requests: number, cpu: number, main: number, profile?: string }

/** Sends a command to a server's profiler agent and waits for its answer. */
async function command (server: Server, line: string, expected: string): Promise<void> {
  await askAgent(server, line, 'profiler', expected)
}

/** CPU µs of the profiler's own thread (V8's "v8:ProfEvntProc", alive while it profiles), left out of the figures. */
function profilerMicros (pid: number): number {
  let micros = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('v8:Prof')) micros += cpuMicros(pid, Number(tid))
    } catch {} // a thread that ended meanwhile
  }
  return micros
}

/** One measured window of `variant` (after a warm-up of `warmup` s), profiled when PROFILE_CPU=1. */
async function measure (variant: Variant, round: number, warmup: number): Promise<Run> {
  const { server } = variant
  const pid = server.child.pid!
  const { path, body } = target(variant)
  await loadRun(server.base + path, warmup, body, connections)
  if (profiling) await command(server, `start ${intervalMicros}`, 'started')
  const cpuBefore = cpuMicros(pid)
  const mainBefore = cpuMicros(pid, pid)
  const profilerBefore = profiling ? profilerMicros(pid) : 0
  const result = await loadRun(server.base + path, seconds, body, connections)
  const profiler = profiling ? profilerMicros(pid) - profilerBefore : 0
  const cpu = cpuMicros(pid) - cpuBefore - profiler
  const main = cpuMicros(pid, pid) - mainBefore
  const requests = result.total
  if (result.errors > 0) throw new Error(`${variant.name}: ${result.errors} errors or answers not 2xx`)
  const run: Run = { rps: result.rps, requests, cpu: cpu / requests, main: main / requests }
  if (profiling) {
    run.profile = join(out!, `${variant.key}-round${round + 1}.cpuprofile`)
    await command(server, `stop ${run.profile}`, 'stopped')
  }
  return run
}

// ---- Reading the profiles ----

interface CallFrame { functionName: string, url: string, scriptId: string | number, lineNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, children?: number[] }
interface CpuProfile { nodes: ProfileNode[], samples: number[] }

const OTHER_THREADS = 'other threads (GC helpers, compiler, libuv pool; not sampled)'
const SOCKET_WRITES = 'socket writes (native: writev, writeUtf8String, …)'
const OTHER_NATIVE = 'other native bindings (runMicrotasks, timers, …)'
const categories = [
  'node:internal http', 'node:internal other (net, streams, timers)', 'fastify', 'ajv/validation',
  'fast-json-stringify/serialization', 'src/connection-limit', 'src/plugins/envelope', 'src/metrics, prom-client',
  'src/tokens', 'src/store', 'src, other files', 'ioredis', 'pino (logging)', SOCKET_WRITES, OTHER_NATIVE, 'GC (main thread)',
  'V8/libuv native (program)', 'other', OTHER_THREADS
] as const
type Category = typeof categories[number]

const packages: Array<[RegExp, Category]> = [
  [/^(ajv|@fastify\/ajv-compiler|fast-uri|fast-deep-equal|json-schema-traverse|ajv-formats)$/, 'ajv/validation'],
  [/^(fast-json-stringify|@fastify\/fast-json-stringify-compiler|json-schema-ref-resolver)$/, 'fast-json-stringify/serialization'],
  [/^(fastify|@fastify\/.*|find-my-way|avvio|fastq|light-my-request|toad-cache|secure-json-parse|abstract-logging|process-warning|rfdc|fastify-plugin)$/, 'fastify'],
  [/^(ioredis|@ioredis\/.*|redis-parser|redis-errors|denque|cluster-key-slot|standard-as-callback)$/, 'ioredis'],
  [/^(pino|pino-.*|@pinojs\/.*|sonic-boom|fast-redact|safe-stable-stringify|quick-format-unescaped|thread-stream|on-exit-leak-free|atomic-sleep)$/, 'pino (logging)'],
  [/^(prom-client|tdigest|bintrees)$/, 'src/metrics, prom-client']
]

/** Node's C++ functions (socket writes, the microtask runner...): no url, and no script. */
const isNative = ({ url, scriptId }: CallFrame): boolean => url === '' && String(scriptId) === '0'

/** The category of a frame by its own url or name, or undefined (generated code not recognised: its caller's). */
function ownCategory (frame: CallFrame): Category | undefined {
  const { functionName, url } = frame
  if (functionName === '(garbage collector)') return 'GC (main thread)'
  if (functionName === '(program)') return 'V8/libuv native (program)'
  if (isNative(frame)) return /^(writev|write\w*String|writeBuffer|shutdown)$/.test(functionName) ? SOCKET_WRITES : OTHER_NATIVE
  if (url === '') {
    if (/^validate\d+$/.test(functionName)) return 'ajv/validation'
    if (/^anonymous\d+$/.test(functionName)) return 'fast-json-stringify/serialization'
    return undefined
  }
  if (/^node:(_http|http|internal\/http)/.test(url)) return 'node:internal http'
  if (url.startsWith('node:')) return 'node:internal other (net, streams, timers)'
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]
  if (pkg !== undefined) return packages.find(([pattern]) => pattern.test(pkg))?.[1] ?? 'other'
  const file = /\/dist\/(.*)$/.exec(url)?.[1]
  if (file === undefined) return 'other'
  if (file.startsWith('connection-limit.')) return 'src/connection-limit'
  if (file.startsWith('plugins/envelope.')) return 'src/plugins/envelope'
  if (/^(metrics|metrics-server|routes\/metrics)\./.test(file)) return 'src/metrics, prom-client'
  if (file.startsWith('tokens/')) return 'src/tokens'
  if (file.startsWith('store/')) return 'src/store'
  return 'src, other files'
}

/**
 * A function's name and file, the same across builds (no line: it moves between commits); for Node's C++ functions,
 * the code they work for (`under`: the category of the nearest caller outside Node).
 */
function functionKey ({ functionName, url }: CallFrame, under: string): string {
  const name = functionName || '(anonymous)'
  if (url === '') return under === '' ? name : `${name} (native, under ${under})`
  const inPackage = /\/node_modules\/(.*)$/.exec(url)?.[1]
  const built = /\/dist\/(.*)$/.exec(url)?.[1]
  return `${name} (${inPackage ?? (built !== undefined ? `dist/${built}` : url.startsWith('node:') ? url : url.replace(/^.*\//, ''))})`
}

interface Samples { total: number, byCategory: Map<Category, number>, byFunction: Map<string, { category: Category, count: number }> }

/** Self samples of the profiles, by category and by function, without "(idle)". */
function readSamples (files: string[]): Samples {
  const samples: Samples = { total: 0, byCategory: new Map(), byFunction: new Map() }
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
    const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
    const parents = new Map<number, number>()
    for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id)
    const categoryOf = new Map<number, Category>()
    const classify = (id: number): Category => {
      const known = categoryOf.get(id)
      if (known !== undefined) return known
      const parent = parents.get(id)
      const category = ownCategory(nodes.get(id)!.callFrame) ?? (parent === undefined ? 'other' : classify(parent))
      categoryOf.set(id, category)
      return category
    }
    /** The category of the nearest caller that is not Node's own code (the code a native call works for). */
    const under = (id: number): string => {
      for (let at = parents.get(id); at !== undefined; at = parents.get(at)) {
        const category = ownCategory(nodes.get(at)!.callFrame)
        if (category !== undefined && !category.startsWith('node:') && category !== OTHER_NATIVE && category !== SOCKET_WRITES) return category
      }
      return 'node'
    }
    for (const id of profile.samples) {
      const frame = nodes.get(id)!.callFrame
      if (frame.functionName === '(idle)') continue
      const category = classify(id)
      samples.total++
      samples.byCategory.set(category, (samples.byCategory.get(category) ?? 0) + 1)
      const key = functionKey(frame, isNative(frame) && !frame.functionName.startsWith('(') ? under(id) : '')
      const entry = samples.byFunction.get(key) ?? { category, count: 0 }
      entry.count++
      samples.byFunction.set(key, entry)
    }
  }
  return samples
}

// ---- The run ----

const redis = await RedisServer.start()
const mock = new MockWechat({ autoRegister: true })
const upstream = await mock.start()
const wecomMock = new MockWecom({ corps: { [CORP]: { 1000002: AGENT_SECRET } } })
const wecomUpstream = await wecomMock.start()
const env = (hotMs: string) => serviceEnv({ redis: redis.url, wechat: upstream, wecom: wecomUpstream, wecomCorp: CORP, wecomSecret: AGENT_SECRET }, hotMs)
const options = (dir = '.') => ({ dir, pinned, flags: profiling ? ['--import', agent] : [], stdin: profiling })
const variants: Variant[] = []
let stopped: Promise<void> | undefined
/** Stops the servers, the stand-ins and Redis (once). */
const stopAll = async (): Promise<void> => await (stopped ??= (async () => {
  for (const { server } of variants) await stopServer(server)
  await mock.close()
  await wecomMock.close()
  await redis.stop()
})())
// Interrupted: stop what was started, then exit through the 'exit' handlers (which remove the temporary directories).
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => { stopAll().finally(() => process.exit(code)) })
}
try {
  variants.push({ key: 'bare', name: 'bare Fastify route', server: await startServer({ BENCH_VARIANT: 'bare' }, options()) })
  variants.push({ key: 'hot-on', name: 'hot cache on', server: await startServer(env('2000'), options()) })
  variants.push({ key: 'hot-off', name: 'hot cache off', server: await startServer(env('0'), options()) })
  if (baseline !== undefined) {
    // The earlier build, on keys of its own (its entries may be written in another shape).
    variants.push({ key: 'before-hot-on', name: 'before: hot cache on', server: await startServer({ ...env('2000'), REDIS_KEY_PREFIX: 'baseline' }, options(baseline)) })
    variants.push({ key: 'before-hot-off', name: 'before: hot cache off', server: await startServer({ ...env('0'), REDIS_KEY_PREFIX: 'baseline' }, options(baseline)) })
  }
  for (const { server } of variants.slice(1)) {
    const res = await fetch(server.base + route.path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: route.body })
    if (res.status !== 200) throw new Error(`the first request (the token is fetched and cached) answered ${res.status}`)
  }

  const runs = variants.map((): Run[] => [])
  for (const variant of variants) await loadRun(variant.server.base + target(variant).path, 3, target(variant).body, connections)
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (round + k) % variants.length
      runs[i]!.push(await measure(variants[i]!, round, 1))
    }
  }

  const f1 = (n: number): string => n.toFixed(1)
  const signed = (n: number): string => `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(1)}`
  console.log(`\n${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, node flags: ${nodeFlags.join(' ') || 'none'}, ` +
    (pinned ? `servers pinned to core ${pinned.server}, the load generator, Redis and the stand-ins to ${pinned.driver}` : 'not pinned') +
    `; ${loadGenerator} (own process, one thread), ${connections} connections, POST ${route.path} for a cached app; ${rounds} rounds of ${seconds} s per variant ` +
    '(each after a 1 s warm-up), alternated; medians over the rounds' +
    (profiling ? `; profiled (V8 CPU profiler, a sample every ${intervalMicros} µs, in the figures)` : ''))
  console.log('\n| variant | requests/s | ratio to bare | server CPU µs per request | per round | − bare (µs, median of rounds) | main thread µs per request |')
  console.log('|---|---|---|---|---|---|---|')
  const bareRuns = runs[0]!
  for (const [i, variant] of variants.entries()) {
    const mine = runs[i]!
    console.log(`| ${variant.name} | ${median(mine.map((run) => run.rps)).toFixed(0)} | ` +
      `${median(mine.map((run, r) => run.rps / bareRuns[r]!.rps)).toFixed(2)} | ${f1(median(mine.map((run) => run.cpu)))} | ` +
      `${mine.map((run) => f1(run.cpu)).join(', ')} | ${i === 0 ? '' : signed(median(mine.map((run, r) => run.cpu - bareRuns[r]!.cpu)))} | ` +
      `${f1(median(mine.map((run) => run.main)))} |`)
  }

  if (profiling) {
    /** µs per request, by category and by function, of each variant. */
    const costs = variants.map((variant, i) => {
      const mine = runs[i]!
      const samples = readSamples(mine.map((run) => run.profile!))
      const main = median(mine.map((run) => run.main))
      const perSample = samples.total === 0 ? 0 : main / samples.total
      const byCategory = new Map<Category, number>(categories.map((category) => [category, (samples.byCategory.get(category) ?? 0) * perSample]))
      byCategory.set(OTHER_THREADS, median(mine.map((run) => run.cpu - run.main)))
      const byFunction = new Map([...samples.byFunction].map(([key, { category, count }]) => [key, { category, micros: count * perSample }]))
      return { variant, samples: samples.total, byCategory, byFunction }
    })
    const columns = costs.map((cost) => cost.variant.name)
    const differences: Array<{ name: string, of: (category: Category) => number }> = []
    const byKey = new Map(costs.map((cost) => [cost.variant.key, cost]))
    const at = (key: string, category: Category): number => byKey.get(key)?.byCategory.get(category) ?? 0
    differences.push({ name: 'hot on − bare', of: (c) => at('hot-on', c) - at('bare', c) })
    differences.push({ name: 'hot off − bare', of: (c) => at('hot-off', c) - at('bare', c) })
    if (baseline !== undefined) {
      differences.push({ name: 'hot on: after − before', of: (c) => at('hot-on', c) - at('before-hot-on', c) })
      differences.push({ name: 'hot off: after − before', of: (c) => at('hot-off', c) - at('before-hot-off', c) })
    }
    console.log('\nself time by category, µs per request (share of the main thread\'s samples × its CPU µs per request; ' +
      `samples: ${costs.map((cost) => `${cost.variant.name} ${cost.samples}`).join(', ')})\n`)
    console.log(`| category | ${[...columns, ...differences.map((d) => d.name)].join(' | ')} |`)
    console.log(`|---|${[...columns, ...differences].map(() => '---:').join('|')}|`)
    for (const category of categories) {
      console.log(`| ${category} | ${[...costs.map((cost) => f1(cost.byCategory.get(category)!)), ...differences.map((d) => signed(d.of(category)))].join(' | ')} |`)
    }
    const sum = (cost: typeof costs[number]): number => [...cost.byCategory.values()].reduce((a, b) => a + b, 0)
    console.log(`| **total** | ${[...costs.map((cost) => f1(sum(cost))), ...differences.map((d) => signed(categories.reduce((a, c) => a + d.of(c), 0)))].join(' | ')} |`)

    // The functions that cost the most on the service's variants, with the bare route's (and the earlier build's) cost of the same function.
    const top = 15
    for (const key of ['hot-on', 'hot-off']) {
      const mine = byKey.get(key)!
      const before = byKey.get(`before-${key}`)
      const bare = byKey.get('bare')!
      const names = new Set([...mine.byFunction.keys(), ...(before ? before.byFunction.keys() : [])])
      const micros = (cost: typeof mine | undefined, name: string): number => cost?.byFunction.get(name)?.micros ?? 0
      const ranked = [...names].sort((a, b) => Math.max(micros(mine, b), micros(before, b)) - Math.max(micros(mine, a), micros(before, a))).slice(0, top)
      console.log(`\n${mine.variant.name}: the ${top} functions with the most self time, µs per request\n`)
      console.log(`| function (file) | category | ${before ? 'before | ' : ''}${mine.variant.name} | bare route |`)
      console.log(`|---|---|${before ? '---:|' : ''}---:|---:|`)
      for (const name of ranked) {
        const category = mine.byFunction.get(name)?.category ?? before?.byFunction.get(name)?.category ?? 'other'
        console.log(`| ${name.replaceAll('|', '\\|')} | ${category} | ${before ? `${f1(micros(before, name))} | ` : ''}${f1(micros(mine, name))} | ${f1(micros(bare, name))} |`)
      }
    }
    console.log(temporary
      ? '\n(the .cpuprofile files were in a temporary directory, removed at exit: PROFILE_OUT=<dir> keeps them)'
      : `\n.cpuprofile files (one per variant and round; Chrome DevTools or speedscope draw their flame graphs): ${out}`)
  }
} finally {
  await stopAll()
}
