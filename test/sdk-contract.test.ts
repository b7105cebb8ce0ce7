import t from 'tap'
import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { AuthenticationClient } from 'authing-node-sdk'
import { ApiCodes } from '../src/api-codes.js'
import { encryptOpenData } from '../src/stand-in/wechat.js'
import { APP_ID, APP_SECRET, OTHER_SECRET, build, personal, startMock } from './helpers/build.js'

t.test('the official authing-node-sdk gets tokens from both routes over a real socket', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const seen: Array<Record<string, unknown>> = []
  await app.listen({ port: 0, host: '127.0.0.1' })
  app.server.on('request', (req: IncomingMessage) => { seen.push({ url: req.url, ...req.headers }) })
  const port = (app.server.address() as AddressInfo).port

  const client = new AuthenticationClient({
    appId: 'genauth-app-1',
    appSecret: 'genauth-app-secret',
    appHost: `http://127.0.0.1:${port}`
  })

  const info = await client.getWechatMpAccessTokenInfo({ appId: APP_ID, appSecret: APP_SECRET })
  t.equal(info.statusCode, 200)
  t.equal(info.message, 'Operation successful')
  t.type(info.requestId, 'string')
  t.type(info.data.accessToken, 'string')
  t.equal(mock.check(info.data.accessToken), 'valid')
  t.match(info.data.expiresAt, /^\d{10}$/)

  const obsolete = await client.getWechatMpAccessToken({ appId: APP_ID, appSecret: APP_SECRET })
  t.equal(obsolete.statusCode, 200)
  t.equal(obsolete.data.accessToken, info.data.accessToken)
  t.equal(mock.issued(APP_ID), 1)

  const refused = await client.getWechatMpAccessTokenInfo({ appId: APP_ID, appSecret: OTHER_SECRET })
  t.equal(refused.statusCode, ApiCodes.WECHAT_INVALID_SECRET.statusCode, 'a business error reaches the SDK caller as an envelope, not a throw')
  t.equal(refused.apiCode, ApiCodes.WECHAT_INVALID_SECRET.apiCode)
  t.notOk(refused.data)

  const missing = await client.getWechatMpAccessTokenInfo({ appId: APP_ID } as never)
  t.equal(missing.statusCode, 400)
  t.equal(missing.apiCode, ApiCodes.INVALID_ARGUMENT.apiCode)

  t.same(seen.map((h) => h.url), [
    '/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token',
    '/api/v3/get-wechat-access-token-info', '/api/v3/get-wechat-access-token-info'
  ], 'one request per call: the SDK did not retry')
  t.equal(seen[0]?.['x-authing-app-id'], 'genauth-app-1', 'the SDK sends its own headers, which are accepted')
})

t.test('the official authing-node-sdk decrypts Mini Program data, with an end user\'s token in authorization', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, {
    upstream: url,
    env: { WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }), WECHAT_IDENTIFIERS: JSON.stringify({ 'my-wxapp': APP_ID }), SCHEDULER_INTERVAL_SECONDS: '0' }
  })
  const seen: Array<Record<string, unknown>> = []
  await app.listen({ port: 0, host: '127.0.0.1' })
  app.server.on('request', (req: IncomingMessage) => { seen.push({ url: req.url, ...req.headers }) })
  const port = (app.server.address() as AddressInfo).port
  // As a Mini Program's backend holds it: the GenAuth token of the signed-in user, sent as authorization.
  const userToken = 'eyJhbGciOiJSUzI1NiJ9.end-user.token'
  const client = new AuthenticationClient({ appId: 'genauth-app-1', appSecret: 'genauth-app-secret', appHost: `http://127.0.0.1:${port}`, accessToken: userToken })

  const login = mock.mintLoginCode(APP_ID, { unionid: 'oUnion-sdk-contract-7f3a' })
  const payload = { openId: login.openid, nickName: 'sdk-contract-nick', unionId: 'oUnion-sdk-contract-7f3a', watermark: { timestamp: 1795542463, appid: APP_ID } }
  const sealed = encryptOpenData(login.sessionKey, payload)
  personal.push(sealed.iv, sealed.encryptedData, payload.nickName)
  const request = { code: login.code, iv: sealed.iv, encryptedData: sealed.encryptedData, extIdpConnidentifier: 'my-wxapp' }
  const decrypted = await client.decryptWechatMiniProgramData(request)
  t.equal(decrypted.statusCode, 200, decrypted.message)
  t.same(decrypted.data, payload, 'data is the decrypted object, watermark included')

  const again = await client.decryptWechatMiniProgramData(request)
  t.equal(again.statusCode, ApiCodes.WECHAT_CODE_USED.statusCode, 'an error reaches the caller as an envelope, not a throw')
  t.equal(again.apiCode, ApiCodes.WECHAT_CODE_USED.apiCode)
  t.equal(mock.calls('jscode2session'), 1)
  t.same(seen.map((h) => h.url), ['/api/v3/decrypt-wechat-miniprogram-data', '/api/v3/decrypt-wechat-miniprogram-data'])
  t.equal(seen[0]?.authorization, userToken, 'the SDK sent the user\'s token, which is accepted without AUTH_TOKENS')
})
