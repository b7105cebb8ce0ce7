/** The routes of an app's JS-SDK / card ticket and of the wx.config signature. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import { SignatureDataSchema, SignatureRequestSchema, TicketDataSchema, TicketRequestSchema, ticketDataJson } from '../schemas/credentials.js'
import { CallerKeySecurity, ThrottledSchema, envelopeOf } from '../schemas/token.js'
import { signatureJson } from '../tokens/tickets.js'
import { normalized } from './token-service.js'

export const TICKET_ROUTE = '/api/v3/get-wechat-jsapi-ticket'
export const SIGNATURE_ROUTE = '/api/v3/get-wechat-jssdk-signature'

/**
 * An absolute http(s) URL: the schema checked its scheme, characters and length; this checks it parses (a host, and
 * one that is valid), without building a URL object.
 */
export function checkUrl (url: string): void {
  if (!URL.canParse(url)) throw new AppError('INVALID_ARGUMENT', 'url must be an absolute http:// or https:// URL')
}

const ticketRoutes: FastifyPluginAsyncTypebox = async (app) => {
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
      response: { 200: envelopeOf(TicketDataSchema), 429: ThrottledSchema }
    },
    ...limited
  }, (request, reply) => {
    const { appId, appSecret, type = 'jsapi' } = request.body
    const kept = app.tickets.fromHot(appId, appSecret, type)
    if (kept) {
      app.sendSuccess(request, reply, TICKET_ROUTE, ticketDataJson(kept))
      return
    }
    return app.tickets.afterHotMiss(appId, appSecret, type, context(request, appId)).then((ticket) => {
      app.sendSuccess(request, reply, TICKET_ROUTE, ticketDataJson(ticket))
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
      response: { 200: envelopeOf(SignatureDataSchema), 429: ThrottledSchema }
    },
    ...limited
  }, (request, reply) => {
    const { appId, appSecret, url } = request.body
    checkUrl(url)
    const kept = app.tickets.fromHot(appId, appSecret, 'jsapi')
    if (kept) {
      app.sendSuccess(request, reply, SIGNATURE_ROUTE, signatureJson(app.tickets.signed(normalized(appId), kept, url)))
      return
    }
    return app.tickets.signature(appId, appSecret, url, context(request, appId)).then((data) => {
      app.sendSuccess(request, reply, SIGNATURE_ROUTE, signatureJson(data))
    })
  })
}

export default ticketRoutes
