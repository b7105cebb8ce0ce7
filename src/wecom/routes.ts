/** The WeCom routes (this service's own: GenAuth has no WeCom method), in the GenAuth envelope. */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import { SignatureRequestSchema, TicketDataSchema, ticketDataJson } from '../schemas/credentials.js'
import { CallerKeySecurity, EnvelopeSchema, ThrottledSchema, envelopeOf, tokenDataJson } from '../schemas/token.js'
import type { WecomSignature } from './ticket-service.js'

export const WECOM_TOKEN_ROUTE = '/api/v3/get-wecom-access-token'
export const WECOM_TICKET_ROUTE = '/api/v3/get-wecom-jsapi-ticket'
export const WECOM_SIGNATURE_ROUTE = '/api/v3/get-wecom-jssdk-signature'
const OK = 'Operation successful'

export const WecomTokenRequestSchema = Type.Object({
  corpId: Type.String({ pattern: '^w[wx][0-9a-f]{16}$', description: 'WeCom corpId (ww or wx and 16 lower-case hex)' }),
  corpSecret: Type.String({ pattern: '^[A-Za-z0-9_-]{16,128}$', description: 'The secret of one application of the corp (WECOM_APPS)' })
})

const ticketFields = {
  corpId: WecomTokenRequestSchema.properties.corpId,
  corpSecret: WecomTokenRequestSchema.properties.corpSecret,
  type: Type.Unsafe<'corp' | 'agent'>({
    type: 'string',
    enum: ['corp', 'agent'],
    description: 'corp: the corp\'s jsapi ticket (get_jsapi_ticket), for wx.config; agent: the application\'s ticket ' +
      '(ticket/get?type=agent_config), for wx.agentConfig'
  }),
  agentId: Type.Optional(Type.String({
    pattern: '^[0-9]{1,10}$',
    description: 'The application whose secret corpSecret is (WECOM_APPS); when sent, it must be that one (apiCode 2001 otherwise)'
  }))
}

export const WecomTicketRequestSchema = Type.Object(ticketFields)

export const WecomSignatureRequestSchema = Type.Object({ ...ticketFields, url: SignatureRequestSchema.properties.url })

export const WecomSignatureDataSchema = Type.Object({
  appId: Type.Optional(Type.String({ description: 'type corp: the corpId, under the name wx.config takes it' })),
  corpid: Type.Optional(Type.String({ description: 'type agent: the corpId, as wx.agentConfig takes it' })),
  agentid: Type.Optional(Type.String({ description: 'type agent: the application\'s agentId, as wx.agentConfig takes it' })),
  timestamp: Type.Integer({ description: 'Unix time in seconds the signature was made at' }),
  nonceStr: Type.String({ description: '16 random characters' }),
  signature: Type.String({ description: 'SHA-1 (hex) of jsapi_ticket, noncestr, timestamp and url, with the ticket of the type asked for' })
})

/** The fields wx.config (corp) or wx.agentConfig (agent) takes, under the names it takes them. */
function signatureData (signed: WecomSignature) {
  const { corpId, agentId, timestamp, nonceStr, signature } = signed
  return agentId === undefined
    ? { appId: corpId, timestamp, nonceStr, signature }
    : { corpid: corpId, agentid: agentId, timestamp, nonceStr, signature }
}

const wecomRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(WECOM_TOKEN_ROUTE, {
    schema: {
      summary: 'Get the access token of a WeCom application',
      operationId: 'getWecomAccessToken',
      tags: ['wecom'],
      security: CallerKeySecurity,
      description: 'One token per application (corpId and the application\'s secret, of WECOM_APPS), cached until it expires and ' +
        'fetched once for any number of callers and instances. Two applications of one corp never share a token.',
      body: WecomTokenRequestSchema,
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'corpId' },
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { corpId, corpSecret } = request.body
    const kept = app.wecomTokens.fromHot(corpId, corpSecret)
    if (kept) {
      app.sendSuccess(request, reply, WECOM_TOKEN_ROUTE, tokenDataJson(kept))
      return
    }
    return app.wecomTokens.afterHotMiss(corpId, corpSecret, context(request, corpId)).then((token) => {
      app.sendSuccess(request, reply, WECOM_TOKEN_ROUTE, tokenDataJson(token))
    })
  })

  app.post(WECOM_TICKET_ROUTE, {
    schema: {
      summary: 'Get a WeCom JS-SDK ticket: the corp\'s (wx.config) or an application\'s (wx.agentConfig)',
      operationId: 'getWecomJsapiTicket',
      tags: ['wecom'],
      security: CallerKeySecurity,
      description: 'The corp ticket is one per corp, for any of its applications of WECOM_APPS; the application ticket is one per ' +
        'application, never another\'s. Each is cached until it expires and fetched once for any number of callers and instances, ' +
        'within an hourly budget (WECOM_CORP_TICKET_HOURLY_BUDGET, WECOM_AGENT_TICKET_HOURLY_BUDGET).',
      body: WecomTicketRequestSchema,
      response: { 200: envelopeOf(TicketDataSchema), 429: ThrottledSchema }
    },
    config: { appField: 'corpId' },
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { corpId, corpSecret, type, agentId } = request.body
    const kept = app.wecomTickets.fromHot(corpId, corpSecret, type, agentId)
    if (kept) {
      app.sendSuccess(request, reply, WECOM_TICKET_ROUTE, ticketDataJson(kept))
      return
    }
    return app.wecomTickets.afterHotMiss(corpId, corpSecret, type, agentId, context(request, corpId)).then((ticket) => {
      app.sendSuccess(request, reply, WECOM_TICKET_ROUTE, ticketDataJson(ticket))
    })
  })

  app.post(WECOM_SIGNATURE_ROUTE, {
    schema: {
      summary: 'Sign a page url for WeCom\'s wx.config (corp ticket) or wx.agentConfig (application ticket)',
      operationId: 'getWecomJssdkSignature',
      tags: ['wecom'],
      security: CallerKeySecurity,
      description: 'data holds what the call takes, under its names: for type corp appId (the corpId), timestamp, nonceStr and ' +
        'signature, for wx.config; for type agent corpid, agentid, timestamp, nonceStr and signature, for wx.agentConfig. The url ' +
        'is the page\'s, as the page has it; its #fragment is ignored and nothing in it is escaped.',
      body: WecomSignatureRequestSchema,
      response: { 200: envelopeOf(WecomSignatureDataSchema), 429: ThrottledSchema }
    },
    config: { appField: 'corpId' },
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { corpId, corpSecret, type, agentId, url } = request.body
    if (!URL.canParse(url)) throw new AppError('INVALID_ARGUMENT', 'url must be an absolute http:// or https:// URL')
    const kept = app.wecomTickets.fromHot(corpId, corpSecret, type, agentId)
    if (kept) {
      app.finish(request, reply, 200, WECOM_SIGNATURE_ROUTE)
      reply.send({ statusCode: 200, message: OK, requestId: request.id, data: signatureData(app.wecomTickets.signed(corpId, corpSecret, type, kept, url)) })
      return
    }
    return app.wecomTickets.afterHotMiss(corpId, corpSecret, type, agentId, context(request, corpId)).then((ticket) => {
      app.finish(request, reply, 200, WECOM_SIGNATURE_ROUTE)
      return { statusCode: 200, message: OK, requestId: request.id, data: signatureData(app.wecomTickets.signed(corpId, corpSecret, type, ticket, url)) }
    })
  })
}

export default wecomRoutes
