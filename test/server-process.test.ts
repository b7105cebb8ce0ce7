import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { request } from 'undici'
import { APP_ID, APP_SECRET, startMock } from './helpers/build.js'
import { freePort } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'

async function startServer (env: Record<string, string>) {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('..', import.meta.url),
    env: { PATH: process.env.PATH ?? '', PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break
    try {
      await request(`${base}/health/live`)
      return { child, base, output: () => output }
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  child.kill('SIGKILL')
  throw new Error(`server did not start: ${output}`)
}

async function token (base: string) {
  const res = await request(`${base}${ROUTE}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ appId: APP_ID, appSecret: APP_SECRET })
  })
  return await res.body.json() as { statusCode: number, data?: { accessToken: string } }
}

t.test('the service runs offline on its defaults with WECHAT_API_BASE=mock', async (t) => {
  const { child, base } = await startServer({ WECHAT_API_BASE: 'mock' })
  t.teardown(() => { child.kill('SIGKILL') })
  const envelope = await token(base)
  t.equal(envelope.statusCode, 200)
  t.type(envelope.data?.accessToken, 'string')
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'exits cleanly on SIGTERM')
})

t.test('SIGTERM lets in-flight requests finish, then exits', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'latency', ms: 600 } })
  const { child, base, output } = await startServer({ WECHAT_API_BASE: url })
  t.teardown(() => { child.kill('SIGKILL') })
  const inflight = token(base)
  t.ok(await until(() => mock.calls('stable_token') === 1), 'the request is in flight: WeChat has it')
  child.kill('SIGTERM')
  const envelope = await inflight
  t.equal(envelope.statusCode, 200, 'the request accepted before SIGTERM got its token')
  const [code] = await once(child, 'exit')
  t.equal(code, 0)
  t.match(output(), /shutting down/)
})

t.test('SIGTERM under load: every request accepted before it gets its answer', async (t) => {
  const { mock, url } = await startMock(t, { autoRegister: true })
  mock.inject({ fault: { kind: 'latency', ms: 700 } })
  const { child, base } = await startServer({ WECHAT_API_BASE: url, WECHAT_POOL_CONNECTIONS: '128', UNVERIFIED_CHECKS_PER_CALLER: '1000' })
  t.teardown(() => { child.kill('SIGKILL') })
  const inflight = Array.from({ length: 100 }, async (_, i) => {
    const res = await request(`${base}${ROUTE}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ appId: `wx${i.toString(16).padStart(16, 'c')}`, appSecret: APP_SECRET })
    })
    return await res.body.json() as { statusCode: number }
  })
  for (let i = 0; i < 100 && mock.calls('stable_token') < 100; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(mock.calls('stable_token'), 100, 'all 100 requests are in flight')
  child.kill('SIGTERM')
  const answers = await Promise.all(inflight)
  t.equal(answers.filter((a) => a.statusCode === 200).length, 100, 'all 100 answered with a token')
  const [code] = await once(child, 'exit')
  t.equal(code, 0)
  await t.rejects(request(`${base}/health/live`), 'no longer accepting')
})

t.test('a bad configuration stops the start with a message naming the variable', async (t) => {
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ WECHAT_TOKEN_MODE: 'turbo' }, /WECHAT_TOKEN_MODE/],
    [{ SHUTDOWN_GRACE_MS: '2147483648' }, /SHUTDOWN_GRACE_MS must be <= 600000/],
    [{ WECHAT_API_BASE: 'http://[::1' }, /WECHAT_API_BASE must be "mock" or an http:\/\/ or https:\/\/ URL/],
    [{ PORT: '1e3' }, /PORT must be an integer in plain decimal digits/]
  ]
  for (const [env, message] of bad) {
    const port = await freePort()
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: new URL('..', import.meta.url),
      env: { PATH: process.env.PATH ?? '', PORT: String(port), ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    // A configuration taken would start the service: stopped after a bound, it fails the test instead of hanging it.
    const bound = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const [code] = await once(child, 'exit')
    clearTimeout(bound)
    t.equal(code, 1, JSON.stringify(env))
    t.match(stderr, new RegExp(`^Invalid configuration: .*${message.source}`), `${JSON.stringify(env)}: the configuration message`)
    t.notMatch(stderr, /\n\s+at /, 'and no stack')
  }
})
