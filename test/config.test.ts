import t from 'tap'
import { ConfigSchema, loadConfig } from '../src/config.js'

t.test('defaults need nothing from the environment', async (t) => {
  const config = loadConfig({})
  t.equal(config.PORT, 8080)
  t.equal(config.WECHAT_TOKEN_MODE, 'stable')
  t.equal(config.WECHAT_API_BASE, 'https://api.weixin.qq.com')
  t.equal(config.REDIS_URL, undefined, 'no Redis: the memory store')
  t.equal(config.TOKEN_SERVE_MARGIN_SECONDS, 120)
})

t.test('values are coerced from strings; empty values mean unset', async (t) => {
  const config = loadConfig({ PORT: '9000', WECHAT_TOKEN_MODE: 'classic', REDIS_URL: '', WECHAT_MAX_RETRIES: '0' })
  t.equal(config.PORT, 9000)
  t.equal(config.WECHAT_TOKEN_MODE, 'classic')
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.WECHAT_MAX_RETRIES, 0)
})

t.test('a bad value is refused with an error that names the variable', async (t) => {
  const bad: Record<string, string> = {
    PORT: 'eighty',
    WECHAT_TOKEN_MODE: 'fast',
    REDIS_URL: 'localhost:6379',
    WECHAT_API_BASE: 'ftp://x',
    LOG_LEVEL: 'loud',
    WECHAT_MAX_RETRIES: '9',
    REQUEST_DEADLINE_MS: '5'
  }
  for (const [name, value] of Object.entries(bad)) {
    t.throws(() => loadConfig({ [name]: value }), new RegExp(name), `${name}=${value}`)
  }
})

t.test('settings that could never work are refused at start', async (t) => {
  t.throws(() => loadConfig({ REFRESH_AHEAD_SECONDS: '120', TOKEN_SERVE_MARGIN_SECONDS: '120' }), /REFRESH_AHEAD_SECONDS/)
  t.throws(() => loadConfig({ REFRESH_AHEAD_SECONDS: '600', TOKEN_SERVE_MARGIN_SECONDS: '300' }), /REFRESH_AHEAD_SECONDS.*290/,
    'stable mode refreshes ahead at most 290 s before expiry')
  t.doesNotThrow(() => loadConfig({ WECHAT_TOKEN_MODE: 'classic', REFRESH_AHEAD_SECONDS: '600', TOKEN_SERVE_MARGIN_SECONDS: '300' }))
  t.throws(() => loadConfig({ SECRET_CHECK_INTERVAL_SECONDS: '60' }), /SECRET_CHECK_INTERVAL_SECONDS.*UNVERIFIED_/,
    'a variable that no longer exists is named, with what replaced it')
})

t.test('FINGERPRINT_KEY keys the secret fingerprints', async (t) => {
  const { fingerprint } = await import('../src/fingerprint.js')
  const id = 'wx0123456789abcdef'
  const secret = '0123456789abcdef0123456789abcdef'
  t.not(fingerprint(id, secret, 'a-key-of-the-operators-choosing'), fingerprint(id, secret), 'another key, another fingerprint')
  t.equal(fingerprint(id, secret, 'k'.repeat(32)), fingerprint(id, secret, 'k'.repeat(32)))
  t.throws(() => loadConfig({ FINGERPRINT_KEY: 'short' }), /FINGERPRINT_KEY/, 'at least 16 characters')
})

t.test('a time setting above what a timer holds is refused, naming the variable', async (t) => {
  // setTimeout and setInterval take at most 2^31 - 1 ms: a longer delay fires after 1 ms, so every fetch would time out
  // at once and SIGTERM would cut in-flight requests. *_SECONDS settings become timers of 1000 times as many ms, the
  // scheduler's with up to 20 % of jitter on top.
  const timerLimit = 2 ** 31 - 1
  const timed = Object.entries(ConfigSchema.properties).filter(([name]) => /_(MS|SECONDS)$/.test(name))
  t.ok(timed.length >= 18, `${timed.length} time settings`)
  for (const [name, schema] of timed) {
    const factor = name.endsWith('_SECONDS') ? 1000 : 1
    const { maximum } = schema as { maximum?: number }
    t.ok(maximum !== undefined && maximum * factor * 1.2 <= timerLimit, `${name} has a maximum (${maximum}) that a timer holds`)
    t.throws(() => loadConfig({ [name]: String(Math.ceil((timerLimit + 1) / factor)) }), new RegExp(`^env/${name} must be <= ${maximum}$`),
      `${name} past a timer's limit`)
  }
  t.doesNotThrow(() => loadConfig({ REQUEST_DEADLINE_MS: '300000', LOCK_LEASE_MS: '600000', SHUTDOWN_GRACE_MS: '600000', SCHEDULER_INTERVAL_SECONDS: '3600' }),
    'the maximums themselves are taken')
})

t.test('integers are plain decimal digits; Ajv alone would coerce 1e3, 0x10, 80.0 or " 80"', async (t) => {
  for (const [name, value] of [['PORT', '1e3'], ['HOT_CACHE_MS', '0x10'], ['PORT', '80.0'], ['PORT', ' 80'], ['MAX_CONNECTIONS', '1_000'], ['SCHEDULER_INTERVAL_SECONDS', '0b11']]) {
    t.throws(() => loadConfig({ [name!]: value }), new RegExp(`^env/${name} must be an integer in plain decimal digits$`), `${name}=${value}`)
  }
  t.equal(loadConfig({ PORT: '08080' }).PORT, 8080, 'leading zeros are still decimal')
  t.throws(() => loadConfig({ PORT: '-1' }), /^env\/PORT must be >= 0$/, 'a negative number gets the schema\'s message')
})

t.test('WECHAT_API_BASE must parse as a URL', async (t) => {
  for (const value of ['http://[::1', 'http://example.com:99999', 'https://:80', 'http://%zz']) {
    t.throws(() => loadConfig({ WECHAT_API_BASE: value }), /^env\/WECHAT_API_BASE must be "mock" or an http:\/\/ or https:\/\/ URL/, value)
  }
  t.equal(loadConfig({ WECHAT_API_BASE: 'http://[::1]:8080/proxy/' }).WECHAT_API_BASE, 'http://[::1]:8080/proxy/')
})

t.test('one appId listed in two letter cases is refused, naming it', async (t) => {
  const apps = JSON.stringify({ wx0123456789ABCDEF: '0123456789abcdef0123456789abcdef', wx0123456789abcdef: 'fedcba9876543210fedcba9876543210' })
  t.throws(() => loadConfig({ WECHAT_APPS: apps }), /^env\/WECHAT_APPS lists appId wx0123456789abcdef twice, in two letter cases$/)
  const dir = t.testdir({ 'apps.json': apps })
  t.throws(() => loadConfig({ WECHAT_APPS_FILE: `${dir}/apps.json` }), /^env\/WECHAT_APPS_FILE lists appId wx0123456789abcdef twice/)
  const identifiers = JSON.stringify({ 'my-wxapp': 'wx0123456789ABCDEF', 'my-wxapp-too': 'wx0123456789abcdef' })
  t.doesNotThrow(() => loadConfig({ WECHAT_APPS: JSON.stringify({ wx0123456789abcdef: '0123456789abcdef0123456789abcdef' }), WECHAT_IDENTIFIERS: identifiers }),
    'two identifiers may name one app, in any letter case: each is one Mini Program of WECHAT_APPS')
})

t.test('only the environment given is read: an empty variable of the process is unset too', async (t) => {
  const saved = { ...process.env }
  t.teardown(() => { process.env = saved })
  Object.assign(process.env, { WECHAT_APPS: '', AUTH_TOKENS: '', PORT: '', HOT_CACHE_MS: '5' })
  const config = loadConfig()
  t.equal(config.WECHAT_APPS, undefined, 'WECHAT_APPS= is unset, as docs/configuration.md says, not a JSON error')
  t.equal(config.AUTH_TOKENS, undefined, 'AUTH_TOKENS= is unset, not "lists no key"')
  t.equal(config.PORT, 8080, 'PORT= is the default, not 0 (a random port)')
  t.equal(loadConfig({}).HOT_CACHE_MS, 2000, 'an explicit environment is the only one read')
})

t.test('METRICS_HOST without METRICS_PORT is refused, not silently ignored', async (t) => {
  // An operator who sets METRICS_HOST=127.0.0.1 to keep the metrics local, and forgets METRICS_PORT, gets /metrics
  // on PORT, wherever that listens, with nothing said.
  t.throws(() => loadConfig({ HOST: '0.0.0.0', METRICS_HOST: '127.0.0.1' }), /METRICS_HOST/)
})

t.test('parts of WECHAT_API_BASE the client would drop (user info, query) are refused, not silently ignored', async (t) => {
  // The client keeps the URL's origin and path only: a proxy's credentials or a query vanish with nothing said.
  t.throws(() => loadConfig({ WECHAT_API_BASE: 'https://egress-user:egress-pass@egress.example/wechat' }), /WECHAT_API_BASE/, 'user info')
  t.throws(() => loadConfig({ WECHAT_API_BASE: 'https://egress.example/wechat?tenant=a' }), /WECHAT_API_BASE/, 'a query')
})

t.test('blank addresses and keys, and a REDIS_URL that does not parse, are refused at start', async (t) => {
  t.throws(() => loadConfig({ HOST: '   ' }), /HOST/)
  t.throws(() => loadConfig({ FINGERPRINT_KEY: ' '.repeat(16) }), /FINGERPRINT_KEY/)
  t.throws(() => loadConfig({ METRICS_PORT: '9464', METRICS_HOST: ' ' }), /METRICS_HOST/)
  t.throws(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:99999' }), /REDIS_URL/)
  t.doesNotThrow(() => loadConfig({ REDIS_URL: 'redis://user:pw@127.0.0.1:6379/0', METRICS_PORT: '9464', METRICS_HOST: '127.0.0.1' }))
})
