/** GenAuth's Mini Program decrypt route: a wx.login code's session key decrypts the Mini Program's encrypted data. */
import t from 'tap'
import { execFile } from 'node:child_process'
import { createCipheriv, randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ApiCodes } from '../src/api-codes.js'
import { AppError } from '../src/errors.js'
import { decryptOpenData, encryptedBytes, ivBytes } from '../src/mini-program/open-data.js'
import { encryptOpenData } from '../src/stand-in/wechat.js'
import { APP_ID, APP_SECRET, TestClock, build, personal, post, startMock } from './helpers/build.js'
import { fleetRedis } from './helpers/fleet.js'

const execFileAsync = promisify(execFile)
const DECRYPT = '/api/v3/decrypt-wechat-miniprogram-data'
const IDENTIFIER = 'my-wxapp'
const OTHER_APP = 'wx00000000000000aa'
const env = {
  WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }),
  WECHAT_IDENTIFIERS: JSON.stringify({ [IDENTIFIER]: APP_ID }),
  SCHEDULER_INTERVAL_SECONDS: '0'
}

type Data = Record<string, unknown> & { watermark: { appid: string, timestamp: number } }

/** The apiCode name a call fails with ('none' when it returns). */
function failure (fn: () => unknown): string {
  try {
    fn()
    return 'none'
  } catch (err) {
    return err instanceof AppError ? err.kind : String(err)
  }
}

/** A user-info payload as WeChat encrypts it, with values distinctive enough to search logs for. */
function userInfo (appId = APP_ID): Data {
  const nickName = `nick-${randomBytes(6).toString('hex')}`
  personal.push(nickName)
  return { nickName, gender: 0, language: 'zh_CN', avatarUrl: `https://thirdwx.qlogo.cn/${nickName}/132`, watermark: { timestamp: 1795542463, appid: appId } }
}

/** Encrypts for a session key as WeChat does, and remembers the iv and data as personal (the log scan looks for them). */
function encrypted (sessionKey: string, payload: unknown): { iv: string, encryptedData: string } {
  const sealed = encryptOpenData(sessionKey, payload)
  personal.push(sealed.iv, sealed.encryptedData)
  return sealed
}

t.test('WeChat\'s published sample decrypts to its published plaintext', async (t) => {
  // From the Mini Program docs, "open-ability/signature" (开放数据校验与解密), and WeChat's own WXBizDataCrypt demos.
  const appId = 'wx4f4bc4dec97d474b'
  const sessionKey = Buffer.from('tiihtNczf5v6AKRyjwEUhQ==', 'base64')
  const iv = ivBytes('r7BXXKkLb8qrSNn05n0qiA==')
  const data = encryptedBytes('CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+' +
    '3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInN' +
    'lxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UI' +
    'eorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85' +
    'IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==')
  t.same(decryptOpenData(sessionKey, iv, data, appId), {
    openId: 'oGZUI0egBJY1zhBYw2KhdUfwVJJE',
    nickName: 'Band',
    gender: 1,
    language: 'zh_CN',
    city: 'Guangzhou',
    province: 'Guangdong',
    country: 'CN',
    avatarUrl: 'http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0',
    unionId: 'ocMvos6NjeKLIBqg5Mr9QjxrP1FA',
    watermark: { timestamp: 1477314187, appid: appId }
  })
  t.equal(failure(() => decryptOpenData(sessionKey, iv, data, APP_ID)), 'DATA_APP_MISMATCH', 'the watermark is checked')
  const otherKey = Buffer.from(sessionKey)
  otherKey[0]! ^= 1
  t.equal(failure(() => decryptOpenData(otherKey, iv, data, appId)), 'SESSION_KEY_MISMATCH', 'another key fails the padding or the JSON')
})

t.test('our decryption agrees with an independent AES: every padding length, and any other key or corrupted block', async (t) => {
  const key = randomBytes(16)
  for (let extra = 0; extra < 16; extra++) {
    const payload = { a: 'x'.repeat(extra), watermark: { appid: APP_ID, timestamp: 1 } }
    const iv = randomBytes(16)
    const cipher = createCipheriv('aes-128-cbc', key, iv)
    const sealed = Buffer.concat([cipher.update(JSON.stringify(payload)), cipher.final()])
    t.same(decryptOpenData(key, iv, sealed, APP_ID), payload)
  }
  // A last block whose padding is not PKCS#7 (bytes that differ, or a length over 16): refused, never returned.
  const iv = randomBytes(16)
  const json = Buffer.from(`{"watermark":{"appid":"${APP_ID}"}}    `)
  t.equal(json.length % 16, 0)
  for (const tail of [Buffer.from([...Array(14).fill(0x20), 0x41, 3]), Buffer.alloc(16, 17), Buffer.alloc(16, 0)]) {
    const cipher = createCipheriv('aes-128-cbc', key, iv).setAutoPadding(false)
    const sealed = Buffer.concat([cipher.update(Buffer.concat([json, tail])), cipher.final()])
    t.equal(failure(() => decryptOpenData(key, iv, sealed, APP_ID)), 'SESSION_KEY_MISMATCH')
  }
  // Plaintext that is not JSON, or JSON that is not an object with this app's watermark.
  for (const [text, kind] of [['not json', 'SESSION_KEY_MISMATCH'], ['[1,2]', 'DATA_APP_MISMATCH'], ['{"watermark":{}}', 'DATA_APP_MISMATCH'], ['null', 'DATA_APP_MISMATCH']] as const) {
    const cipher = createCipheriv('aes-128-cbc', key, iv)
    t.equal(failure(() => decryptOpenData(key, iv, Buffer.concat([cipher.update(text), cipher.final()]), APP_ID)), kind, text)
  }
  t.equal(failure(() => encryptedBytes('AAAA')), 'INVALID_ARGUMENT', '3 bytes: not whole blocks')
  t.equal(failure(() => encryptedBytes('A'.repeat(21) + '*A==')), 'INVALID_ARGUMENT')
  t.equal(failure(() => ivBytes('AAAAAAAAAAAAAAAA')), 'INVALID_ARGUMENT', '12 bytes')
})

t.test('a code gives the data as WeChat encrypted it, watermark included; nothing of it is logged, counted or stored', async (t) => {
  const { redis, fleet } = await fleetRedis(t)
  const { mock, url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url, env)
  const login = mock.mintLoginCode(APP_ID, { unionid: `union-${randomBytes(6).toString('hex')}` })
  const payload: Data = { ...userInfo(), openId: login.openid, unionId: login.unionid, nested: { list: [1, 'two', null], ok: true } }
  const { res, body } = await post<Data>(app!, DECRYPT, { code: login.code, ...encrypted(login.sessionKey, payload), extIdpConnidentifier: IDENTIFIER })
  t.equal(res.statusCode, 200)
  t.equal(body.statusCode, 200, body.message)
  t.same(body.data, payload, 'every field, as encrypted')

  // The legacy phone-number payload of getPhoneNumber's encryptedData.
  const second = mock.mintLoginCode(APP_ID)
  const phone = { phoneNumber: '13912345678', purePhoneNumber: '13912345678', countryCode: '86', watermark: { timestamp: 1795542463, appid: APP_ID } }
  const answered = await post<Data>(app!, DECRYPT, { code: second.code, ...encrypted(second.sessionKey, phone), extIdpConnidentifier: IDENTIFIER })
  t.same(answered.body.data, phone)
  t.equal(mock.calls('jscode2session', APP_ID), 2)
  t.equal(mock.issued(APP_ID), 0, 'no access token is needed')

  const metrics = (await app!.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_upstream_calls_total\{endpoint="jscode2session",errcode="0"\} 2/)
  t.match(metrics, /wxtoken_requests_total\{route="\/api\/v3\/decrypt-wechat-miniprogram-data",status_code="200"\} 2/)
  t.match(metrics, /wxtoken_upstream_budget\{credential="code2session"\} 100000/)
  const secrets = [login.code, login.sessionKey, login.openid, login.unionid!, second.code, second.sessionKey, second.openid, payload.nickName as string]
  t.notOk(secrets.some((s) => metrics.includes(s)), 'no code, session key, openid or data in a metric')

  // Redis holds a claim per code (a fingerprint) and a budget counter: none of them names or holds what was sent.
  const client = redis.client()
  t.teardown(() => client.quit())
  const keys = await client.keys('*')
  const values = await Promise.all(keys.map(async (key) => await client.type(key) === 'string' ? await client.get(key) ?? '' : ''))
  t.ok(keys.some((key) => /:login:[A-Za-z0-9_-]{22}$/.test(key)), `a claim is stored: ${keys.join(' ')}`)
  const stored = [...keys, ...values].join('\n')
  t.notOk([...secrets, ...personal].some((s) => stored.includes(s)), 'nothing personal in a Redis key or value')
})

t.test('a code reaches WeChat once, however often and concurrently it is sent, on one instance or several', async (t) => {
  const { fleet } = await fleetRedis(t)
  const { mock, url } = await startMock(t)
  const { apps } = await fleet(t, 3, url, env)
  const login = mock.mintLoginCode(APP_ID)
  const body = { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => (await post<Data>(apps[i % 3]!, DECRYPT, body)).body))
  t.equal(answers.filter((a) => a.statusCode === 200).length, 1, 'one answer has the data')
  const others = answers.filter((a) => a.statusCode !== 200)
  t.ok(others.every((a) => a.apiCode === ApiCodes.WECHAT_CODE_USED.apiCode), others.map((a) => a.apiCode).join())
  t.match(others[0]!.message, /wx\.login/, 'the message says what to do')
  t.equal(mock.calls('jscode2session'), 1, 'WeChat was asked once')

  const again = await post<Data>(apps[1]!, DECRYPT, body)
  t.equal(again.body.apiCode, 3013)
  t.notOk(again.body.message.includes(login.code), 'the message does not repeat the code')
  t.equal(mock.calls('jscode2session'), 1, 'a repeat asks nobody')
})

t.test('data encrypted for another session, or for another app: their own apiCodes, with what to do', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  // The page got the encrypted data, then called wx.login: the data is under the earlier session's key.
  const earlier = mock.mintLoginCode(APP_ID)
  const later = mock.mintLoginCode(APP_ID)
  const stale = await post(app, DECRYPT, { code: later.code, ...encrypted(earlier.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER })
  t.equal(stale.body.apiCode, ApiCodes.SESSION_KEY_MISMATCH.apiCode, stale.body.message)
  t.equal(stale.body.statusCode, 400)
  t.match(stale.body.message, /Call wx\.login first, then get the encrypted data/)

  const foreign = mock.mintLoginCode(APP_ID)
  const other = await post(app, DECRYPT, { code: foreign.code, ...encrypted(foreign.sessionKey, userInfo(OTHER_APP)), extIdpConnidentifier: IDENTIFIER })
  t.equal(other.body.apiCode, ApiCodes.DATA_APP_MISMATCH.apiCode, other.body.message)
  t.notOk(other.body.message.includes(OTHER_APP), 'the message does not repeat the data')

  const unmarked = mock.mintLoginCode(APP_ID)
  const none = await post(app, DECRYPT, { code: unmarked.code, ...encrypted(unmarked.sessionKey, { nickName: 'x' }), extIdpConnidentifier: IDENTIFIER })
  t.equal(none.body.apiCode, 3015)

  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_decrypt_refusals_total\{reason="session_key"\} 1/)
  t.match(metrics, /wxtoken_decrypt_refusals_total\{reason="app"\} 2/)
})

t.test('bad input is refused before the code is spent, and the code still works after', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env })
  const login = mock.mintLoginCode(APP_ID)
  const good = { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
  const cases: Array<[string, Record<string, unknown>, number]> = [
    ['iv not base64', { ...good, iv: '!!!!!!!!!!!!!!!!!!!!!!==' }, 1002],
    ['iv of 12 bytes', { ...good, iv: randomBytes(12).toString('base64') }, 1002],
    ['iv of 24 bytes', { ...good, iv: randomBytes(24).toString('base64') }, 1002],
    ['encryptedData not base64', { ...good, encryptedData: 'not base64 at all' }, 1002],
    ['encryptedData of 15 bytes', { ...good, encryptedData: randomBytes(15).toString('base64') }, 1002],
    ['encryptedData with a character base64 skips', { ...good, encryptedData: `${good.encryptedData.slice(0, 8)}=${good.encryptedData.slice(8)}` }, 1002],
    ['encryptedData empty', { ...good, encryptedData: '' }, 1002],
    ['iv a number', { ...good, iv: 42 }, 1002],
    ['code missing', { ...good, code: undefined }, 1002],
    ['code with a space', { ...good, code: 'a b' }, 1002],
    ['unknown identifier', { ...good, extIdpConnidentifier: 'nobody' }, 2004],
    ['identifier missing', { ...good, extIdpConnidentifier: undefined }, 1002]
  ]
  for (const [what, body, apiCode] of cases) {
    const { res, body: answer } = await post(app, DECRYPT, body)
    t.equal(res.statusCode, 200, what)
    t.equal(answer.apiCode, apiCode, `${what}: ${answer.message}`)
  }
  t.equal(mock.calls('jscode2session'), 0, 'WeChat was asked nothing')
  t.equal((await post(app, DECRYPT, good)).body.statusCode, 200, 'the code was not spent')

  const bare = await build(t, { upstream: url, env: { SCHEDULER_INTERVAL_SECONDS: '0' } })
  t.equal((await post(bare.app, DECRYPT, good)).body.apiCode, 2004, 'without WECHAT_IDENTIFIERS')
})

t.test('WeChat\'s refusals are answered with their apiCodes, the code sent once, never retried', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, WECHAT_MAX_RETRIES: '3', REQUEST_DEADLINE_MS: '1500', WECHAT_HEADERS_TIMEOUT_MS: '1000' } })
  const send = async () => {
    const login = mock.mintLoginCode(APP_ID)
    return (await post(app, DECRYPT, { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER })).body
  }
  const cases: Array<[number, number]> = [[40029, 3012], [40163, 3013], [40226, 3016], [45011, 3017], [41008, 3010]]
  for (const [errcode, apiCode] of cases) {
    const before = mock.calls('jscode2session')
    mock.inject({ fault: { kind: 'errcode', errcode }, endpoint: 'jscode2session', times: 1 })
    const answer = await send()
    t.equal(answer.apiCode, apiCode, `${errcode}: ${answer.message}`)
    t.match(answer.message, new RegExp(`errcode ${errcode}`))
    t.equal(mock.calls('jscode2session') - before, 1, `${errcode}: one call`)
  }
  t.equal((await send()).statusCode, 200, 'a user\'s 45011 backs nobody else off')

  const unknown = mock.mintLoginCode(APP_ID)
  t.equal((await post(app, DECRYPT, { code: 'f'.repeat(32), ...encrypted(unknown.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER })).body.apiCode, 3012,
    'a code WeChat does not know: 40029')

  for (const [fault, apiCode] of [[{ kind: 'errcode', errcode: -1 }, 3007], [{ kind: 'drop' }, 3008], [{ kind: 'hang' }, 3008], [{ kind: 'http', status: 502 }, 3009]] as const) {
    await t.test(`${JSON.stringify(fault)}: one call, then the Mini Program's logins back off`, async (t) => {
      const clock = new TestClock()
      const { app } = await build(t, { upstream: url, clock, env: { ...env, WECHAT_MAX_RETRIES: '3', REQUEST_DEADLINE_MS: '1500', WECHAT_HEADERS_TIMEOUT_MS: '1000' } })
      const before = mock.calls('jscode2session')
      mock.inject({ fault, endpoint: 'jscode2session', times: 1 })
      const login = mock.mintLoginCode(APP_ID)
      const body = { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
      t.equal((await post(app, DECRYPT, body)).body.apiCode, apiCode)
      t.equal(mock.calls('jscode2session') - before, 1, 'not sent again: WeChat may have spent the code')
      // The next login meanwhile is not sent, so its code is kept for after the backoff.
      const next = mock.mintLoginCode(APP_ID)
      const nextBody = { code: next.code, ...encrypted(next.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
      const { res, body: refused } = await post(app, DECRYPT, nextBody)
      t.equal(refused.apiCode, ApiCodes.UPSTREAM_BACKOFF.apiCode, refused.message)
      t.ok(Number(res.headers['retry-after']) >= 1)
      t.equal(mock.calls('jscode2session') - before, 1)
      clock.advance(Number(res.headers['retry-after']) * 1000)
      t.equal((await post(app, DECRYPT, nextBody)).body.statusCode, 200, 'the same code, once the backoff ended')
      t.equal((await post(app, DECRYPT, body)).body.apiCode, 3013, 'the code that may have reached WeChat stays spent')
    })
  }
})

t.test('SESSION_DAILY_BUDGET bounds the calls of a day; a code refused by it was not spent', async (t) => {
  const { mock, url } = await startMock(t)
  const clock = new TestClock()
  const { app } = await build(t, { upstream: url, clock, env: { ...env, SESSION_DAILY_BUDGET: '2' } })
  const logins = [0, 1, 2].map(() => mock.mintLoginCode(APP_ID))
  const bodies = logins.map((login) => ({ code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }))
  t.equal((await post(app, DECRYPT, bodies[0])).body.statusCode, 200)
  mock.inject({ fault: { kind: 'errcode', errcode: 40029 }, endpoint: 'jscode2session', times: 1 })
  t.equal((await post(app, DECRYPT, bodies[1])).body.apiCode, 3012, 'a junk code spends the budget too')
  const refused = await post(app, DECRYPT, bodies[2])
  t.equal(refused.body.apiCode, ApiCodes.SESSION_BUDGET_EXHAUSTED.apiCode, refused.body.message)
  t.equal(refused.body.statusCode, 429)
  t.equal(mock.calls('jscode2session'), 2)
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wxtoken_local_refusals_total\{reason="budget",credential="code2session"\} 1/)
  clock.advance(24 * 3600 * 1000)
  t.equal((await post(app, DECRYPT, bodies[2])).body.statusCode, 200, 'the next day, the same code')
})

t.test('RATE_LIMIT_PER_APP counts decrypt and phone requests per identifier together', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { ...env, RATE_LIMIT_PER_APP: '2', RATE_LIMIT_WINDOW_SECONDS: '60' } })
  const login = mock.mintLoginCode(APP_ID)
  const body = { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
  t.equal((await post(app, DECRYPT, body)).body.statusCode, 200)
  t.equal((await post(app, '/api/v3/get-wechat-miniprogram-phone', { code: mock.mintPhoneCode(APP_ID), extIdpConnidentifier: IDENTIFIER })).body.statusCode, 200)
  const next = mock.mintLoginCode(APP_ID)
  const { res, body: limited } = await post(app, DECRYPT, { ...body, code: next.code })
  t.equal(res.statusCode, 429)
  t.equal(limited.apiCode, 4004)
  t.equal(mock.calls('jscode2session'), 1)
})

t.test('while Redis is down, a code still reaches WeChat once from an instance', async (t) => {
  const { redis, fleet } = await fleetRedis(t)
  const { mock, url } = await startMock(t)
  const { apps: [app] } = await fleet(t, 1, url, { ...env, REDIS_COMMAND_TIMEOUT_MS: '200' })
  await redis.stop()
  const login = mock.mintLoginCode(APP_ID)
  const body = { code: login.code, ...encrypted(login.sessionKey, userInfo()), extIdpConnidentifier: IDENTIFIER }
  const answers = await Promise.all([1, 2, 3].map(async () => (await post(app!, DECRYPT, body)).body))
  t.same(answers.map((a) => a.statusCode).sort(), [200, 400, 400], answers.map((a) => a.message).join(' | '))
  t.equal(mock.calls('jscode2session'), 1)
})

t.test('npm run demo: the stand-in answers demo codes, and demo:open-data encrypts for them', async (t) => {
  const { app } = await build(t, { env: { ...env, WECHAT_API_BASE: 'mock', WECHAT_IDENTIFIERS: JSON.stringify({ demo: APP_ID }) } })
  const code = `demo-${randomBytes(6).toString('hex')}`
  const script = fileURLToPath(new URL('../scripts/demo-open-data.ts', import.meta.url))
  const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', script, code, APP_ID, 'demo'])
  const body = JSON.parse(stdout) as Record<string, string>
  personal.push(body.iv!, body.encryptedData!)
  const answer = await post<Data>(app, DECRYPT, body)
  t.equal(answer.body.statusCode, 200, answer.body.message)
  t.equal(answer.body.data?.nickName, 'Demo user')
  t.equal(answer.body.data?.watermark.appid, APP_ID)
  t.equal((await post(app, DECRYPT, body)).body.apiCode, 3013, 'once')
})
