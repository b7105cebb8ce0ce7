/**
 * What scripts/bench.ts and scripts/profile-hit.ts share: the Node flags of `npm start`, pinning to cores, a server
 * process of scripts/bench-server.js (this build's or an earlier checkout's), the service's environment, CPU time read
 * from /proc, and autocannon's CLI in a process of its own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import type autocannon from 'autocannon'

/** The Node flags of `npm start`, so that the service is measured as it runs in production. */
const startScript = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start
export const nodeFlags = startScript.split(' ').filter((word) => word.startsWith('--'))

/** The cached app, the WeCom application and the token route both scripts drive. */
export const SECRET = '0123456789abcdef0123456789abcdef'
export const APP = 'wx0123456789abcdef'
export const CORP = 'ww0123456789abcdef'
export const AGENT_SECRET = 'WeComBenchSecret000000000000000000000000001'
export const INFO = '/api/v3/get-wechat-access-token-info'
export const body = JSON.stringify({ appId: APP, appSecret: SECRET })

/** The core the servers run on, and the driver's (with Redis, the stand-ins and autocannon). */
export interface Cores { server: string, driver: string }

/**
 * Pins this process (and so everything it starts from now on) to every core but the last, which is left to the
 * servers: undefined, and nothing pinned, unless `wanted` on a machine of 2 cores or more with taskset.
 */
export function pinCores (wanted: boolean): Cores | undefined {
  const cores = cpus().length
  if (!wanted || cores < 2 || spawnSync('taskset', ['-V']).status !== 0) return undefined
  const pinned = { server: String(cores - 1), driver: cores === 2 ? '0' : `0-${cores - 2}` }
  spawnSync('taskset', ['-a', '-pc', pinned.driver, String(process.pid)])
  return pinned
}

export interface Server { child: ChildProcess, base: string, metricsBase?: string }

export interface ServerOptions {
  /** A checkout whose build and scripts/bench-server.js are run (this one by default). */
  dir?: string
  /** Cores from pinCores: the server runs on theirs. */
  pinned?: Cores | undefined
  /** More Node flags (before the script). */
  flags?: string[]
  /** A pipe to the server's stdin (for a preloaded agent that reads commands there). */
  stdin?: boolean
}

/** A server process of `dir`'s scripts/bench-server.js, with the flags of `npm start` and --expose-gc. */
export async function startServer (env: Record<string, string>, options: ServerOptions = {}): Promise<Server> {
  const { dir = '.', pinned, flags = [], stdin = false } = options
  const command = [...nodeFlags, '--expose-gc', ...flags, `${dir}/scripts/bench-server.js`]
  // taskset execs node: the child's pid is the server's.
  const child = spawn(pinned ? 'taskset' : process.execPath, pinned ? ['-c', pinned.server, process.execPath, ...command] : command, {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe']
  })
  const [chunk] = await once(child.stdout!, 'data') as [Buffer]
  const [port, metricsPort] = chunk.toString().trim().split(' ')
  return { child, base: `http://127.0.0.1:${port}`, ...(metricsPort ? { metricsBase: `http://127.0.0.1:${metricsPort}` } : {}) }
}

/**
 * Sends a line to an agent preloaded into a server (scripts/profile-agent.js, scripts/gc-agent.js) on its stdin, and
 * resolves with the agent's answer: the first line of JSON on stderr whose `key` field is `expected`. An answer with
 * another value in that field (a failure) rejects.
 */
export async function askAgent (server: Server, line: string, key: string, expected: string): Promise<Record<string, unknown>> {
  const { child } = server
  let buffered = ''
  let onData = (_chunk: Buffer): void => {}
  let onExit = (): void => {}
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      onExit = () => { reject(new Error('the server exited')) }
      onData = (chunk) => {
        buffered += chunk.toString()
        const lines = buffered.split('\n')
        buffered = lines.pop()!
        const answer = lines.find((text) => text.startsWith(`{"${key}"`))
        if (answer === undefined) return
        const message = JSON.parse(answer) as Record<string, unknown>
        if (message[key] === expected) resolve(message)
        else reject(new Error(`${key}: ${String(message.error ?? message[key])}`))
      }
      child.stderr!.on('data', onData)
      child.once('exit', onExit)
      child.stdin!.write(line + '\n')
    })
  } finally {
    child.stderr!.off('data', onData)
    child.off('exit', onExit)
  }
}

export async function stopServer (server: Server): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return
  const exited = once(server.child, 'exit')
  server.child.kill('SIGTERM')
  await exited
}

/** Where the service finds Redis and the stand-ins. */
export interface Upstreams { redis: string, wechat: string, wecom: string, wecomCorp: string, wecomSecret: string }

/** The service's environment in the benchmarks, with the hot cache on for `hotMs` ('0': off). */
export function serviceEnv (upstreams: Upstreams, hotMs: string): Record<string, string> {
  return {
    REDIS_URL: upstreams.redis,
    WECHAT_API_BASE: upstreams.wechat,
    WECOM_API_BASE: upstreams.wecom,
    WECOM_APPS: JSON.stringify({ [upstreams.wecomCorp]: { 1000002: upstreams.wecomSecret } }),
    // The WeCom scheduler would fetch before the cold burst does.
    SCHEDULER_INTERVAL_SECONDS: '0',
    HOT_CACHE_MS: hotMs,
    WECHAT_COMPAT_API: 'true',
    LOG_LEVEL: 'warn'
  }
}

/** CPU time (user + system) a process has used, in microseconds; with `tid`, that of one of its threads. */
export function cpuMicros (pid: number, tid?: number): number {
  const file = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`
  const fields = readFileSync(file, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * (1e6 / 100)
}

/** autocannon in a process of its own, as a load generator is run (its CLI, printing JSON); a GET without `payload`. */
export async function autocannonRun (url: string, duration: number, payload: string | undefined, connections: number): Promise<autocannon.Result> {
  const request = payload === undefined ? ['-m', 'GET'] : ['-m', 'POST', '-H', 'content-type=application/json', '-b', payload]
  const child = spawn(process.execPath, [
    'node_modules/autocannon/autocannon.js', '--json', '-c', String(connections), '-p', '1', '-d', String(duration), ...request, url
  ], { stdio: ['ignore', 'pipe', 'ignore'] })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const [code] = await once(child, 'close') as [number]
  if (code !== 0) throw new Error(`autocannon exited with ${code}`)
  return JSON.parse(out.trim().split('\n').at(-1)!) as autocannon.Result
}

/** What one load run measured, whichever generator ran it. */
export interface LoadResult {
  /** Requests answered per second over the run. */
  rps: number
  /** Requests answered in all. */
  total: number
  /** Latency percentiles, ms. */
  p50: number
  p99: number
  /** Connection errors, timeouts and answers with a status other than 2xx. */
  errors: number
}

/**
 * The load generator: wrk (C, one thread; `apt-get install wrk`) when it is on the PATH, as the hot-path target was
 * measured, unless BENCH_LOAD=autocannon; autocannon's CLI otherwise. wrk spends a fraction of autocannon's CPU per
 * request, so the driver's core (shared with Redis and the stand-ins) limits a run far less.
 */
export const loadGenerator: 'wrk' | 'autocannon' =
  process.env.BENCH_LOAD !== 'autocannon' && spawnSync('wrk', ['--version']).error === undefined ? 'wrk' : 'autocannon'

/** wrk's script: the request, and a summary printed as one JSON line at the end (latencies in µs). */
const wrkScript = `
local body = os.getenv("WRK_BODY")
if body ~= nil and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["content-type"] = "application/json"
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration":%d,"errors":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`
let wrkScriptFile: string | undefined

/** One load run of `duration` seconds on `url` with `connections` kept-alive connections: a POST of `payload`, or a GET. */
export async function loadRun (url: string, duration: number, payload: string | undefined, connections: number): Promise<LoadResult> {
  if (loadGenerator === 'autocannon') {
    const result = await autocannonRun(url, duration, payload, connections)
    return { rps: result.requests.average, total: result.requests.total, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx }
  }
  if (wrkScriptFile === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'wxtoken-wrk-'))
    process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
    wrkScriptFile = join(dir, 'request.lua')
    writeFileSync(wrkScriptFile, wrkScript)
  }
  const child = spawn('wrk', ['-t', '1', '-c', String(connections), '-d', `${duration}s`, '-s', wrkScriptFile, url], {
    env: { PATH: process.env.PATH ?? '', WRK_BODY: payload ?? '' }, stdio: ['ignore', 'pipe', 'ignore']
  })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const [code] = await once(child, 'close') as [number]
  const line = out.trim().split('\n').at(-1) ?? ''
  if (code !== 0 || !line.startsWith('{')) throw new Error(`wrk exited with ${code}: ${out.slice(-500)}`)
  const result = JSON.parse(line) as { requests: number, duration: number, errors: number, p50: number, p99: number }
  return { rps: result.requests / (result.duration / 1e6), total: result.requests, p50: result.p50 / 1000, p99: result.p99 / 1000, errors: result.errors }
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
