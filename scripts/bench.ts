/**
 * Benchmark (npm run bench builds first): starts Redis, the WeChat stand-in and each server variant in its own process, drives it with
 * autocannon and prints figures as Markdown: cache hits on both routes with the hot cache on and off against a
 * bare Fastify route (the ceiling), a cold burst of 1,000 concurrent requests, and RSS with 10,000 apps cached.
 * Settings: BENCH_SECONDS (10 per run), BENCH_CONNECTIONS (50).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import autocannon from 'autocannon'
import { Pool } from 'undici'
import { MockWechat } from '../src/mock-wechat.js'
import { RedisServer } from '../test/helpers/redis-server.js'

const seconds = Number(process.env.BENCH_SECONDS ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const SECRET = '0123456789abcdef0123456789abcdef'
const APP = 'wx0123456789abcdef'
const INFO = '/api/v3/get-wechat-access-token-info'
const OBSOLETE = '/api/v3/get-wechat-access-token'
const body = JSON.stringify({ appId: APP, appSecret: SECRET })

interface Server { child: ChildProcess, base: string }

async function startServer (env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, ['--expose-gc', 'scripts/bench-server.js'], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const [chunk] = await once(child.stdout!, 'data') as [Buffer]
  return { child, base: `http://127.0.0.1:${chunk.toString().trim()}` }
}

/** The server's memory after a full collection (it prints it on SIGUSR2). */
async function memoryAfterGc (server: Server): Promise<{ rss: number, heapUsed: number }> {
  const line = once(server.child.stderr!, 'data') as Promise<[Buffer]>
  server.child.kill('SIGUSR2')
  const [chunk] = await line
  return JSON.parse(chunk.toString().trim().split('\n').at(-1) ?? '{}')
}

async function stopServer (server: Server): Promise<void> {
  const exited = once(server.child, 'exit')
  server.child.kill('SIGTERM')
  await exited
}

/** CPU time (user + system) a process has used, in microseconds. */
function cpuMicros (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * (1e6 / 100)
}

async function load (server: Server, path: string) {
  const options = { url: server.base + path, method: 'POST' as const, headers: { 'content-type': 'application/json' }, body, connections, pipelining: 1 }
  await autocannon({ ...options, duration: 2 })
  const cpuBefore = cpuMicros(server.child.pid!)
  const result = await autocannon({ ...options, duration: seconds })
  const cpuPerRequest = (cpuMicros(server.child.pid!) - cpuBefore) / result.requests.total
  const errors = result.errors + result.non2xx
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, cpuPerRequest, errors }
}

const redis = await RedisServer.start()
const mock = new MockWechat({ autoRegister: true })
const upstream = await mock.start()
const serviceEnv = (hotMs: string) => ({ REDIS_URL: redis.url, WECHAT_API_BASE: upstream, HOT_CACHE_MS: hotMs, LOG_LEVEL: 'warn' })

const rows: Array<{ name: string, rps: number, p50: number, p99: number, cpuPerRequest: number, errors: number }> = []
const bare = await startServer({ BENCH_VARIANT: 'bare' })
rows.push({ name: 'bare Fastify route (ceiling)', ...await load(bare, INFO) })
await stopServer(bare)

for (const [hotMs, label] of [['2000', 'hot cache on'], ['0', 'hot cache off']] as const) {
  const server = await startServer(serviceEnv(hotMs))
  for (const path of [INFO, OBSOLETE]) {
    await fetch(server.base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    rows.push({ name: `cache hit, ${path.endsWith('info') ? 'current' : 'obsolete'} route, ${label}`, ...await load(server, path) })
  }
  await stopServer(server)
}

const server = await startServer(serviceEnv('2000'))
mock.inject({ fault: { kind: 'latency', ms: 100 } })
const cold = 'wx00000000c01db00f'
const pool = new Pool(server.base, { connections: 1000 })
const callsBefore = mock.calls('stable_token')
const started = performance.now()
let firstToken = 0
const answers = await Promise.all(Array.from({ length: 1000 }, async () => {
  const res = await pool.request({ method: 'POST', path: INFO, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId: cold, appSecret: SECRET }) })
  const envelope = await res.body.json() as { statusCode: number }
  if (firstToken === 0 && envelope.statusCode === 200) firstToken = performance.now() - started
  return envelope.statusCode
}))
const burstMs = performance.now() - started
const coldCalls = mock.calls('stable_token') - callsBefore
mock.clearFaults()

await pool.close()
await stopServer(server)

const apps = 10_000
const memoryServer = await startServer(serviceEnv('2000'))
const idle = await memoryAfterGc(memoryServer)
const fill = new Pool(memoryServer.base, { connections: 200 })
for (let i = 0; i < apps; i += 200) {
  await Promise.all(Array.from({ length: 200 }, async (_, j) => {
    const appId = `wx${(i + j).toString(16).padStart(16, '7')}`
    const res = await fill.request({ method: 'POST', path: INFO, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ appId, appSecret: SECRET }) })
    await res.body.dump()
  }))
}
const peakKb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${memoryServer.child.pid}/status`, 'utf8'))?.[1] ?? 0)
const filled = await memoryAfterGc(memoryServer)
await fill.close()
await stopServer(memoryServer)
await mock.close()
await redis.stop()

const ceiling = rows[0]!
const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 })
console.log(`\n${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; autocannon ${connections} connections, ${seconds} s per run after a 2 s warm-up\n`)
console.log('| run | requests/s | p50 ms | p99 ms | ratio to bare | service CPU µs per request | CPU ratio (bare / run) | errors |')
console.log('|---|---|---|---|---|---|---|---|')
for (const row of rows) {
  console.log(`| ${row.name} | ${fmt(row.rps)} | ${row.p50} | ${row.p99} | ${(row.rps / ceiling.rps).toFixed(2)} | ` +
    `${row.cpuPerRequest.toFixed(1)} | ${(ceiling.cpuPerRequest / row.cpuPerRequest).toFixed(2)} | ${row.errors} |`)
}
console.log(`\ncold burst: 1,000 concurrent requests for an uncached app (upstream latency 100 ms): ${coldCalls} upstream call(s), ` +
  `first token after ${firstToken.toFixed(0)} ms, all answered after ${burstMs.toFixed(0)} ms, ${answers.filter((s) => s === 200).length} got a token`)
const mb = (bytes: number) => (bytes / 1048576).toFixed(1)
console.log(`memory of a fresh service process, after a full GC: RSS ${mb(idle.rss)} MB and heap ${mb(idle.heapUsed)} MB idle; ` +
  `with ${fmt(apps)} apps cached RSS ${mb(filled.rss)} MB and heap ${mb(filled.heapUsed)} MB ` +
  `(${((filled.heapUsed - idle.heapUsed) / apps / 1024).toFixed(2)} KB per app); peak RSS while filling ${(peakKb / 1024).toFixed(1)} MB`)
