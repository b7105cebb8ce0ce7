/** The decrypt route under a hostile caller or an unlucky deployment: what it promises must still hold. */
import t from 'tap'
import { createCipheriv, randomBytes } from 'node:crypto'
import { APP_ID, APP_SECRET, build, personal, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'
import { until } from './helpers/until.js'

const DECRYPT = '/api/v3/decrypt-wechat-miniprogram-data'
const IDENTIFIER = 'my-wxapp'
const env = {
  WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }),
  WECHAT_IDENTIFIERS: JSON.stringify({ [IDENTIFIER]: APP_ID }),
  SCHEDULER_INTERVAL_SECONDS: '0'
}

/** Any plaintext, encrypted for a session key as WeChat encrypts open data; the iv and data are personal. */
function sealed (sessionKey: string, plaintext: string): { iv: string, encryptedData: string } {
  const iv = randomBytes(16)
  const cipher = createCipheriv('aes-128-cbc', Buffer.from(sessionKey, 'base64'), iv)
  const encryptedData = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]).toString('base64')
  personal.push(iv.toString('base64'), encryptedData)
  return { iv: iv.toString('base64'), encryptedData }
}

const watermark = `"watermark":{"timestamp":1795542463,"appid":"${APP_ID}"}`

t.test('an instance does not send a code again as Redis comes back or goes down', async (t) => {
  const { redis, fleet } = await fleetRedis(t)
  const { mock, url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url, { ...env, REDIS_COMMAND_TIMEOUT_MS: '200' })
  await redis.stop()
  const login = mock.mintLoginCode(APP_ID)
  const body = { code: login.code, ...sealed(login.sessionKey, `{${watermark}}`), extIdpConnidentifier: IDENTIFIER }
  t.equal((await post(app!, DECRYPT, body)).body.statusCode, 200, 'claimed in process, sent')
  t.equal(mock.calls('jscode2session'), 1)

  await redis.restart()
  t.ok(await until(async () => (await app!.inject({ method: 'GET', url: '/health/ready' })).json().storeUp === true, 10_000), 'Redis is back')
  const again = await post(app!, DECRYPT, body)
  t.equal(again.body.apiCode, 3013, again.body.message)
  t.equal(mock.calls('jscode2session'), 1, 'the instance remembers the code it sent during the outage: WeChat is not asked again')

  // And the other way: a code sent while Redis was up is not sent again by the instance while Redis is down.
  const before = mock.mintLoginCode(APP_ID)
  const sentBefore = { code: before.code, ...sealed(before.sessionKey, `{${watermark}}`), extIdpConnidentifier: IDENTIFIER }
  t.equal((await post(app!, DECRYPT, sentBefore)).body.statusCode, 200, 'claimed in Redis, sent')
  await redis.stop()
  const during = await post(app!, DECRYPT, sentBefore)
  t.equal(during.body.apiCode, 3013, during.body.message)
  t.equal(mock.calls('jscode2session'), 2, 'not sent again while Redis is down')
})

t.test('whatever JSON the data decrypts to, the answer is an envelope, never a 500', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, BODY_LIMIT_BYTES: '1048576' } })
  const deep = 100_000
  const plaintexts: Array<[string, string, number]> = [
    ['nested 100,000 arrays deep', `{${watermark},"x":${'['.repeat(deep)}${']'.repeat(deep)}}`, 3015],
    ['nested 100,000 objects deep', `{${watermark},"x":${'{"a":'.repeat(deep)}1${'}'.repeat(deep)}}`, 3015],
    ['nested 32 levels, as deep as allowed', `{${watermark},"x":${'['.repeat(31)}${']'.repeat(31)}}`, 200],
    ['__proto__ and constructor keys', `{"__proto__":{"watermark":{"appid":"wx00000000000000aa"}},"constructor":{"prototype":{"polluted":1}},${watermark}}`, 200],
    ['a number past a double', `{"big":1e400,"long":123456789012345678901234567890,${watermark}}`, 200],
    ['a lone surrogate and line separators', `{"nickName":"\\ud800\u2028\u2029","emoji":"😀",${watermark}}`, 200],
    ['a watermark that is an array', '{"watermark":["appid"]}', 3015],
    ['a watermark whose appid is not a string', '{"watermark":{"appid":["wx0123456789abcdef"]}}', 3015],
    ['a watermark with odd extra fields', `{"watermark":{"appid":"${APP_ID}","timestamp":{"toJSON":"x"},"__proto__":{"a":1}}}`, 200],
    ['a top-level array', `[{${watermark}}]`, 3015],
    ['a top-level string', '"wx0123456789abcdef"', 3015],
    ['a BOM before the object (the UTF-8 decoder drops it)', `\ufeff{${watermark}}`, 200]
  ]
  for (const [what, plaintext, expected] of plaintexts) {
    const login = mock.mintLoginCode(APP_ID)
    const { res, body } = await post<Record<string, unknown>>(app, DECRYPT, { code: login.code, ...sealed(login.sessionKey, plaintext), extIdpConnidentifier: IDENTIFIER })
    t.equal(res.statusCode, 200, what)
    t.equal(body.apiCode ?? body.statusCode, expected, `${what}: ${body.message}`)
    // As JSON has it: a number past a double is null.
    if (expected === 200) t.same(body.data, JSON.parse(JSON.stringify(JSON.parse(plaintext.replace(/^\ufeff/, '')))), `${what}: the data as encrypted`)
  }
  t.equal(({}.constructor as unknown as { polluted?: number }).polluted, undefined, 'nothing polluted')
})

t.test('a secret refusal answered to a login is remembered for logins alone: the app\'s token is still fetched', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  const junk = { code: 'junk-code-of-a-stranger', iv: 'A'.repeat(22) + '==', encryptedData: 'A'.repeat(22) + '==', extIdpConnidentifier: IDENTIFIER }
  mock.inject({ fault: { kind: 'errcode', errcode: 40001 }, endpoint: 'jscode2session', times: 1 })
  t.equal((await post(app, DECRYPT, junk)).body.apiCode, 3002)
  const token = await post(app, '/api/v3/get-wechat-access-token', { appId: APP_ID, appSecret: APP_SECRET })
  t.equal(token.body.statusCode, 200, token.body.message)
  t.equal(mock.issued(APP_ID), 1, 'the token was fetched')
  const login = mock.mintLoginCode(APP_ID)
  const next = await post(app, DECRYPT, { code: login.code, ...sealed(login.sessionKey, `{${watermark}}`), extIdpConnidentifier: IDENTIFIER })
  t.equal(next.body.apiCode, 3002, 'logins remember it')
  t.equal(mock.calls('jscode2session'), 1)
})
