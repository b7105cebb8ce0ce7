/**
 * The routes that use an app's token (its JS-SDK / card ticket, the wx.config signature, a Mini Program phone number),
 * and the Mini Program decrypt route, which uses a user's session.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import type { DecryptService } from '../mini-program/decrypt-service.js'
import type { PhoneService } from '../phone-service.js'
import {
  DecryptDataSchema, DecryptRequestSchema, PhoneDataSchema, PhoneRequestSchema, SignatureDataSchema, SignatureRequestSchema,
  TicketDataSchema, TicketRequestSchema
} from '../schemas/credentials.js'
import { CallerKeySecurity, SdkHeadersSchema, ThrottledSchema, envelopeOf } from '../schemas/token.js'
import { normalized, type ServedToken } from '../token-service.js'
import type { TicketService } from '../ticket-service.js'
import { context } from './token.js'

declare module 'fastify' {
  interface FastifyInstance {
    tickets: TicketService
    /** Undefined without WECHAT_IDENTIFIERS: the phone route then answers IDENTIFIER_NOT_CONFIGURED. */
    phones: PhoneService | undefined
    /** Undefined without WECHAT_IDENTIFIERS: the decrypt route then answers IDENTIFIER_NOT_CONFIGURED. */
    decrypts: DecryptService | undefined
  }
}

export const TICKET_ROUTE = '/api/v3/get-wechat-jsapi-ticket'
export const SIGNATURE_ROUTE = '/api/v3/get-wechat-jssdk-signature'
export const PHONE_ROUTE = '/api/v3/get-wechat-miniprogram-phone'
export const DECRYPT_ROUTE = '/api/v3/decrypt-wechat-miniprogram-data'

const OK = 'Operation successful'

function ticketData (ticket: ServedToken) {
  return { ticket: ticket.accessToken, expiresAt: String(Math.floor(ticket.expiresAt / 1000)), expiresIn: ticket.expiresIn }
}

/**
 * An absolute http(s) URL: the schema checked its scheme, characters and length; this checks it parses (a host, and
 * one that is valid), without building a URL object.
 */
function checkUrl (url: string): void {
  if (!URL.canParse(url)) throw new AppError('INVALID_ARGUMENT', 'url must be an absolute http:// or https:// URL')
}

const credentialRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // The rate limits, as on the token routes: per caller first, then (once the body is parsed) per app.
  const limited = { onRequest: app.limits.perCaller, preHandler: app.limits.perApp }

  app.post(TICKET_ROUTE, {
    schema: {
      summary: 'Get a WeChat JS-SDK ticket (jsapi) or card ticket (wx_card)',
      operationId: 'getWechatJsapiTicket',
      tags: ['tickets'],
      security: CallerKeySecurity,
      description: 'Cached per app and type until it expires, and fetched once for any number of callers and instances.',
      body: TicketRequestSchema,
      headers: SdkHeadersSchema,
      response: { 200: envelopeOf(TicketDataSchema), 429: ThrottledSchema }
    },
    ...limited
  }, (request, reply) => {
    const { appId, appSecret, type = 'jsapi' } = request.body
    const kept = app.tickets.fromHot(appId, appSecret, type)
    if (kept) {
      app.finish(request, reply, 200, TICKET_ROUTE)
      reply.send({ statusCode: 200, message: OK, requestId: request.id, data: ticketData(kept) })
      return
    }
    return app.tickets.getTicket(appId, appSecret, type, context(request, appId)).then((ticket) => {
      app.finish(request, reply, 200, TICKET_ROUTE)
      return { statusCode: 200, message: OK, requestId: request.id, data: ticketData(ticket) }
    })
  })

  app.post(SIGNATURE_ROUTE, {
    schema: {
      summary: 'Sign a page url for wx.config with the app\'s JS-SDK ticket',
      operationId: 'getWechatJssdkSignature',
      tags: ['tickets'],
      security: CallerKeySecurity,
      description: 'data holds appId, timestamp, nonceStr and signature, ready for wx.config. The url is the page\'s, as the page has it; ' +
        'its #fragment is ignored and nothing in it is escaped.',
      body: SignatureRequestSchema,
      headers: SdkHeadersSchema,
      response: { 200: envelopeOf(SignatureDataSchema), 429: ThrottledSchema }
    },
    ...limited
  }, (request, reply) => {
    const { appId, appSecret, url } = request.body
    checkUrl(url)
    const kept = app.tickets.fromHot(appId, appSecret, 'jsapi')
    if (kept) {
      app.finish(request, reply, 200, SIGNATURE_ROUTE)
      reply.send({ statusCode: 200, message: OK, requestId: request.id, data: app.tickets.signed(normalized(appId), kept, url) })
      return
    }
    return app.tickets.signature(appId, appSecret, url, context(request, appId)).then((data) => {
      app.finish(request, reply, 200, SIGNATURE_ROUTE)
      return { statusCode: 200, message: OK, requestId: request.id, data }
    })
  })

  app.post(PHONE_ROUTE, {
    schema: {
      summary: 'Exchange a Mini Program getPhoneNumber code for the user\'s phone number',
      operationId: 'getWechatMiniprogramPhone',
      tags: ['mini program'],
      security: CallerKeySecurity,
      description: 'extIdpConnidentifier names a Mini Program of WECHAT_IDENTIFIERS. A code works once and for 5 minutes (apiCode 3012 after). ' +
        'data holds the phone fields, and again under phone_info.',
      body: PhoneRequestSchema,
      headers: SdkHeadersSchema,
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
      headers: SdkHeadersSchema,
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

export default credentialRoutes
