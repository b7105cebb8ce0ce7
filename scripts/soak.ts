/**
 * Soak: drives a steady load at the service (real Redis, the WeChat stand-in) for a bounded time while injecting
 * Redis and upstream faults, then reports requests, errors by apiCode, latency, upstream calls and memory.
 * Settings: SOAK_SECONDS (default 180), SOAK_CONCURRENCY (32), SOAK_APPS (50), SOAK_MODE (stable | classic).
 */
import { createWriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool } from 'undici'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/logger.js'
import { MockWechat, type MockFault } from '../src/stand-in/wechat.js'
import { RedisServer } from '../test/helpers/redis-server.js'

const seconds = Number(process.env.SOAK_SECONDS ?? 180)
const concurrency = Number(process.env.SOAK_CONCURRENCY ?? 32)
const appCount = Number(process.env.SOAK_APPS ?? 50)
const mode = process.env.SOAK_MODE === 'classic' ? 'classic' : 'stable'
const SECRET = '0123456789abcdef0123456789abcdef'
const appIds = Array.from({ length: appCount }, (_, i) => `wx${i.toString(16).padStart(16, '5')}`)

interface Phase { at: number, until: number, name: string, start: () => Promise<void>, end: () => Promise<void> }

const redis = await RedisServer.start()
const mock = new MockWechat({ autoRegister: true })
const upstream = await mock.start()
const logPath = join(tmpdir(), `wechat-token-cache-soak-${process.pid}.log`)
const logFile = createWriteStream(logPath)
const config = loadConfig({
  REDIS_URL: redis.url,
  WECHAT_API_BASE: upstream,
  WECHAT_TOKEN_MODE: mode,
  REQUEST_DEADLINE_MS: '2000',
  REDIS_COMMAND_TIMEOUT_MS: '500',
  LOG_LEVEL: 'info'
})
const app = await buildApp(config, { logger: createLogger('info', logFile) })
await app.listen({ port: 0, host: '127.0.0.1' })
const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
const pool = new Pool(base, { connections: concurrency })

const fault = (f: MockFault) => async () => { mock.inject({ fault: f }) }
const clear = async () => { mock.clearFaults() }
const phases: Phase[] = [
  { at: 0.20, until: 0.30, name: 'Redis stopped', start: async () => { await redis.stop() }, end: async () => { await redis.restart() } },
  { at: 0.45, until: 0.50, name: 'upstream -1', start: fault({ kind: 'errcode', errcode: -1 }), end: clear },
  { at: 0.60, until: 0.65, name: 'upstream hangs', start: fault({ kind: 'hang' }), end: clear },
  { at: 0.75, until: 0.80, name: 'upstream 502', start: fault({ kind: 'http', status: 502 }), end: clear }
]

const latencies: number[] = []
const outcomes = new Map<string, number>()
const lastToken = new Map<string, string>()
/** Heap figures after a full collection when the script runs with --expose-gc (npm run soak does). */
function memory (): NodeJS.MemoryUsage {
  (globalThis as { gc?: () => void }).gc?.()
  return process.memoryUsage()
}
const memoryAtStart = memory()
const startedAt = Date.now()
const endAt = startedAt + seconds * 1000

async function worker (): Promise<void> {
  while (Date.now() < endAt) {
    const appId = appIds[Math.floor(Math.random() * appIds.length)] as string
    const reported = lastToken.get(appId)
    const refresh = reported !== undefined && Math.random() < 0.005
    const path = refresh ? '/api/v3/refresh-wechat-access-token' : '/api/v3/get-wechat-access-token-info'
    const t0 = process.hrtime.bigint()
    let outcome: string
    try {
      const res = await pool.request({
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ appId, appSecret: SECRET, ...(refresh ? { accessToken: reported } : {}) })
      })
      const body = await res.body.json() as { statusCode: number, apiCode?: number, data?: { accessToken: string } }
      if (body.data) lastToken.set(appId, body.data.accessToken)
      outcome = body.statusCode === 200 ? 'ok' : `apiCode ${body.apiCode ?? '?'} (HTTP ${res.statusCode})`
    } catch (err) {
      outcome = `transport ${(err as { code?: string }).code ?? 'error'}`
    }
    outcome = `${refresh ? 'refresh' : 'token'}: ${outcome}`
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6)
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
  }
}

async function conductor (): Promise<void> {
  for (const phase of phases) {
    await sleep(Math.max(0, startedAt + phase.at * seconds * 1000 - Date.now()))
    console.log(`${((Date.now() - startedAt) / 1000).toFixed(1)} s: ${phase.name}`)
    await phase.start()
    await sleep(Math.max(0, startedAt + phase.until * seconds * 1000 - Date.now()))
    await phase.end()
    console.log(`${((Date.now() - startedAt) / 1000).toFixed(1)} s: ${phase.name}: over`)
  }
}

console.log(`soak: ${seconds} s, ${concurrency} concurrent callers, ${appCount} apps, ${mode} mode, service at ${base}`)
await Promise.all([conductor(), ...Array.from({ length: concurrency }, async () => await worker())])
const elapsed = (Date.now() - startedAt) / 1000
latencies.sort((a, b) => a - b)
const memoryAtEnd = memory()

const pct = (p: number) => (latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0).toFixed(2)
const mb = (bytes: number) => (bytes / 1048576).toFixed(1)
const upstreamCalls = mock.calls('stable_token') + mock.calls('token')
const issued = appIds.reduce((n, id) => n + mock.issued(id), 0)

console.log('\nresult')
console.log(`  requests          ${latencies.length} in ${elapsed.toFixed(1)} s (${(latencies.length / elapsed).toFixed(0)}/s)`)
for (const [outcome, count] of [...outcomes].sort((a, b) => b[1] - a[1])) console.log(`  ${outcome.padEnd(24)}  ${count}`)
console.log(`  latency ms        p50 ${pct(0.5)}  p90 ${pct(0.9)}  p99 ${pct(0.99)}  max ${(latencies.at(-1) ?? 0).toFixed(2)}`)
console.log(`  upstream calls    ${upstreamCalls} (tokens issued: ${issued} for ${appCount} apps)`)
console.log(`  memory            rss ${mb(memoryAtStart.rss)} -> ${mb(memoryAtEnd.rss)} MB, heap ${mb(memoryAtStart.heapUsed)} -> ${mb(memoryAtEnd.heapUsed)} MB`)
console.log(`  service log       ${logPath}`)

await pool.close()
await app.close()
await mock.close()
await redis.stop()
logFile.end()
