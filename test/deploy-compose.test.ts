/**
 * docker-compose.yml as Docker Compose reads it (test/helpers/compose.ts): the settings a user puts in .env, copied
 * from .env.example, reach the service; what compose sets up (HOST, PORT, REDIS_URL) holds whatever .env says; and
 * the offline demo answers the README's curl. No Docker needed.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { loadApps, loadCallerKeys, loadConfig } from '../src/config.js'
import { containerEnv, imageEnv, loadCompose, parseEnvFile } from './helpers/compose.js'
import { RedisServer, freePort } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const root = new URL('../', import.meta.url)
const read = (path: string) => readFileSync(new URL(path, root), 'utf8')
const example = read('.env.example')
const image = imageEnv(read('Dockerfile'))
const SERVICE = 'wechat-token-cache'
const DEMO = 'docker-compose.demo.yml'

/** .env.example with the settings the threat model recommends uncommented, as a user would. */
const userEnv = example.replace(/^# (WECHAT_APPS|AUTH_TOKENS|FINGERPRINT_KEY)=/gm, '$1=')

/** A project folder of tap's (removed after the test) with the compose files and, when given, a .env. */
function projectDir (t: { testdir: (fixture: Record<string, string>) => string }, dotenv?: string): string {
  return t.testdir({
    'docker-compose.yml': read('docker-compose.yml'),
    [DEMO]: read(DEMO),
    ...(dotenv === undefined ? {} : { '.env': dotenv })
  })
}

t.test('env files are read as compose reads them', async (t) => {
  // The examples of Docker's "Syntax for environment files".
  t.same(parseEnvFile('# comment\n\nVAR=VAL # comment\nB=VAL# not a comment\nC=\'$OTHER\'\nexport D=1\n'),
    { VAR: 'VAL', B: 'VAL# not a comment', C: '$OTHER', D: '1' })
  t.same(parseEnvFile('WECHAT_APPS={"wx0123456789abcdef":"x"}'), { WECHAT_APPS: '{"wx0123456789abcdef":"x"}' }, 'quotes inside an unquoted value stay')
  t.throws(() => parseEnvFile('KEY=a$b'), /interpolated/, 'an unquoted $ would be interpolated: refused, not guessed')
  t.throws(() => parseEnvFile('KEY="x"'), /not modelled/)
  t.doesNotThrow(() => parseEnvFile(example), '.env.example, as it is')
  t.same(Object.keys(parseEnvFile(userEnv)).filter((key) => /^(WECHAT_APPS|AUTH_TOKENS|FINGERPRINT_KEY)$/.test(key)).sort(),
    ['AUTH_TOKENS', 'FINGERPRINT_KEY', 'WECHAT_APPS'], 'and with the recommended settings uncommented')
})

t.test('the settings of .env reach the service; HOST, PORT and REDIS_URL stay compose\'s', async (t) => {
  const dir = projectDir(t, userEnv)
  const env = containerEnv(loadCompose(join(dir, 'docker-compose.yml')), SERVICE, image)
  const written = parseEnvFile(userEnv)
  for (const name of ['AUTH_TOKENS', 'WECHAT_APPS', 'FINGERPRINT_KEY', 'WECHAT_TOKEN_MODE', 'LOG_LEVEL']) {
    t.equal(env[name], written[name], `${name} reaches the container`)
  }
  t.equal(written.HOST, '127.0.0.1', '.env.example says 127.0.0.1...')
  t.equal(env.HOST, '0.0.0.0', '...but in its container the service listens on every interface, or the published port would reach nothing')
  t.equal(env.REDIS_URL, 'redis://redis:6379', 'the Redis of the compose file')
  const compose = loadCompose(join(dir, 'docker-compose.yml'))
  t.same(compose.services[SERVICE]!.ports, [`127.0.0.1:${env.PORT}:${env.PORT}`], 'the port published (on loopback) is the one the service listens on')
  const config = loadConfig(env)
  t.same(loadCallerKeys(config).map((key) => key.name), ['billing', 'crm'], 'the service starts with the caller keys of .env')
  t.equal(loadApps(config)?.size, 1, 'and its app')
  t.equal(config.FINGERPRINT_KEY, written.FINGERPRINT_KEY)
})

t.test('without a .env, compose starts the service on its defaults', async (t) => {
  const dir = projectDir(t)
  const env = containerEnv(loadCompose(join(dir, 'docker-compose.yml')), SERVICE, image)
  t.notOk('AUTH_TOKENS' in env)
  t.equal(env.HOST, '0.0.0.0')
  t.doesNotThrow(() => loadConfig(env))
})

t.test('the offline demo answers the README\'s curl, whatever .env holds', async (t) => {
  const readme = read('README.md')
  const curl = /curl -s -X POST (http:\/\/[\d.]+:\d+)(\/\S+) \\\n\s+-H '([^:]+): ([^']+)' \\\n\s+-d '([^']+)'/.exec(readme)
  t.ok(curl, 'the README has its curl')
  const [, origin, path, header, value, body] = curl as unknown as string[]
  t.ok(readme.includes(`docker compose -f docker-compose.yml -f ${DEMO} up --build`), 'and the compose command of the demo')

  const dir = projectDir(t, userEnv)
  const compose = loadCompose(join(dir, 'docker-compose.yml'), join(dir, DEMO))
  const env = containerEnv(compose, SERVICE, image)
  t.equal(env.WECHAT_API_BASE, 'mock', 'tokens from the built-in stand-in')
  t.equal(env.AUTH_TOKENS, '', 'no caller key, though .env has some')
  t.equal(`http://${compose.services[SERVICE]!.ports![0]!.split(':').slice(0, 2).join(':')}`, origin, 'the curl\'s address is the published port')

  // The service as compose starts it, with a local redis-server standing in for the compose one and a free loopback
  // port for the published one.
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: root,
    env: { ...env, PATH: process.env.PATH ?? '', REDIS_URL: redis.url, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  t.teardown(() => { child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${port}`
  t.ok(await until(async () => child.exitCode === null && await request(`${base}/health/ready`).then((res) => res.statusCode === 200, () => false), 30_000),
    `the service is ready ${stderr}`)
  const res = await request(`${base}${path}`, { method: 'POST', headers: { [header!]: value! }, body })
  const envelope = await res.body.json() as { statusCode: number, data?: { accessToken?: string } }
  t.equal(envelope.statusCode, 200, 'the README\'s curl gets a token')
  t.type(envelope.data?.accessToken, 'string')
  child.kill('SIGTERM')
  await once(child, 'exit')
})
