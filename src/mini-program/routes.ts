/** GenAuth's Mini Program routes: a user's phone number, and data decrypted with the session of a wx.login code. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import { DecryptDataSchema, DecryptRequestSchema, PhoneDataSchema, PhoneRequestSchema } from '../schemas/credentials.js'
import { CallerKeySecurity, ThrottledSchema, envelopeOf } from '../schemas/token.js'

export const PHONE_ROUTE = '/api/v3/get-wechat-miniprogram-phone'
export const DECRYPT_ROUTE = '/api/v3/decrypt-wechat-miniprogram-data'

const OK = 'Operation successful'

const miniProgramRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // The rate limits, as on the token routes: per caller first, then (once the body is parsed) per Mini Program.
  const limited = { onRequest: app.limits.perCaller, preHandler: app.limits.perApp }

  app.post(PHONE_ROUTE, {
    schema: {
      summary: 'Exchange a Mini Program getPhoneNumber code for the user\'s phone number',
      operationId: 'getWechatMiniprogramPhone',
      tags: ['mini program'],
      security: CallerKeySecurity,
      description: 'extIdpConnidentifier names a Mini Program of WECHAT_IDENTIFIERS. A code works once and for 5 minutes (apiCode 3012 after). ' +
        'data holds the phone fields, and again under phone_info.',
      body: PhoneRequestSchema,
      response: { 200: envelopeOf(PhoneDataSchema), 429: ThrottledSchema }
    },
    config: { appField: 'extIdpConnidentifier' },
    ...limited
  }, async (request, reply) => {
    const { code, extIdpConnidentifier } = request.body
    if (!app.phones) throw new AppError('IDENTIFIER_NOT_CONFIGURED', 'WECHAT_IDENTIFIERS is not set: no Mini Program is configured for this route')
    const { appId } = app.phones.appOf(extIdpConnidentifier)
    const phone = await app.phones.phoneNumber(extIdpConnidentifier, code, context(request, appId))
    app.finish(request, reply, 200, PHONE_ROUTE)
    return { statusCode: 200, message: OK, requestId: request.id, data: { ...phone, phone_info: phone } }
  })

  app.post(DECRYPT_ROUTE, {
    schema: {
      summary: 'Decrypt a Mini Program\'s encrypted data (user info, the legacy phone number) with the session of a wx.login code',
      operationId: 'decryptWechatMiniProgramData',
      tags: ['mini program'],
      security: CallerKeySecurity,
      description: 'extIdpConnidentifier names a Mini Program of WECHAT_IDENTIFIERS. The code (from wx.login, got before the encrypted ' +
        'data) is sent to WeChat once (apiCode 3013 after); data is the decrypted object, watermark included, whose ' +
        'watermark.appid is checked. Data encrypted for another session is apiCode 3014.',
      body: DecryptRequestSchema,
      response: { 200: envelopeOf(DecryptDataSchema), 429: ThrottledSchema }
    },
    config: { appField: 'extIdpConnidentifier' },
    ...limited
  }, async (request, reply) => {
    const { code, iv, encryptedData, extIdpConnidentifier } = request.body
    if (!app.decrypts) throw new AppError('IDENTIFIER_NOT_CONFIGURED', 'WECHAT_IDENTIFIERS is not set: no Mini Program is configured for this route')
    const { appId } = app.decrypts.miniProgramOf(extIdpConnidentifier)
    const data = await app.decrypts.decrypt(extIdpConnidentifier, code, iv, encryptedData, context(request, appId))
    app.finish(request, reply, 200, DECRYPT_ROUTE)
    return { statusCode: 200, message: OK, requestId: request.id, data }
  })
}

export default miniProgramRoutes
