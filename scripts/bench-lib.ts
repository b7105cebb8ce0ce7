/**
 * What scripts/bench.ts and scripts/profile-hit.ts share: the Node flags of `npm start`, pinning to cores, a server
 * process of scripts/bench-server.js (this build's or an earlier checkout's), the service's environment, CPU time read
 * from /proc, and autocannon's CLI in a process of its own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
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
  const [code] = await once(child, 'exit') as [number]
  if (code !== 0) throw new Error(`autocannon exited with ${code}`)
  return JSON.parse(out.trim().split('\n').at(-1)!) as autocannon.Result
}

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
