/**
 * The authorizers' JS-SDK / card ticket and wx.config signature routes: the Official Account's routes
 * (src/official-account/ticket-routes.ts), for an account that authorized a component, named by the component and the
 * account instead of an appId and its secret, and behind the component routes' caller-key rule.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { context } from '../request-context.js'
import { checkUrl } from '../official-account/ticket-routes.js'
import { SignatureDataSchema, SignatureRequestSchema, TicketDataSchema, TicketRequestSchema, ticketDataJson } from '../schemas/credentials.js'
import { CallerKeySecurity, ThrottledSchema, envelopeOf } from '../schemas/token.js'
import { signatureJson } from '../tokens/tickets.js'
import { AuthorizerTokenRequestSchema, componentKeyRule, type OpenPlatformRouteOptions } from './routes.js'

export const AUTHORIZER_TICKET_ROUTE = '/api/v3/get-authorizer-jsapi-ticket'
export const AUTHORIZER_SIGNATURE_ROUTE = '/api/v3/get-authorizer-jssdk-signature'

export const AuthorizerTicketRequestSchema = Type.Object({
  ...AuthorizerTokenRequestSchema.properties,
  type: TicketRequestSchema.properties.type
})

export const AuthorizerSignatureRequestSchema = Type.Object({
  ...AuthorizerTokenRequestSchema.properties,
  url: SignatureRequestSchema.properties.url
})

const authorizerTicketRoutes: FastifyPluginAsyncTypebox<OpenPlatformRouteOptions> = async (app, options) => {
  // The component routes' caller-key rule, then the rate limits: per caller first, then (once the body is parsed) per component.
  const guarded = { config: { appField: 'componentAppId' as const }, onRequest: [componentKeyRule(options), ...app.limits.perCaller], preHandler: app.limits.perApp }

  app.post(AUTHORIZER_TICKET_ROUTE, {
    schema: {
      summary: 'Get the JS-SDK ticket (jsapi) or card ticket (wx_card) of an account that authorized an Open Platform third-party platform',
      operationId: 'getAuthorizerJsapiTicket',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'The data of /api/v3/get-wechat-jsapi-ticket, for the authorizer: fetched with its authorizer_access_token (a token ' +
        'WeChat refuses is replaced once), cached per authorizer and type until it expires, refreshed ahead, and fetched once for any ' +
        'number of callers and instances (TICKET_DAILY_BUDGET per authorizer). An account that has not authorized the component: ' +
        'apiCode 4010. Needs a caller key (see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: AuthorizerTicketRequestSchema,
      response: { 200: envelopeOf(TicketDataSchema), 429: ThrottledSchema }
    },
    ...guarded
  }, (request, reply) => {
    const { componentAppId, authorizerAppId, type = 'jsapi' } = request.body
    const kept = app.authorizerTickets.fromHot(componentAppId, authorizerAppId, type)
    if (kept) {
      app.sendSuccess(request, reply, AUTHORIZER_TICKET_ROUTE, ticketDataJson(kept))
      return
    }
    return app.authorizerTickets.afterHotMiss(componentAppId, authorizerAppId, type, context(request, componentAppId)).then((ticket) => {
      app.sendSuccess(request, reply, AUTHORIZER_TICKET_ROUTE, ticketDataJson(ticket))
    })
  })

  app.post(AUTHORIZER_SIGNATURE_ROUTE, {
    schema: {
      summary: 'Sign a page url for wx.config with the JS-SDK ticket of an account that authorized an Open Platform third-party platform',
      operationId: 'getAuthorizerJssdkSignature',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'The data of /api/v3/get-wechat-jssdk-signature, for the authorizer: appId is the authorizer\'s, the signature made with ' +
        'its jsapi ticket (the one /api/v3/get-authorizer-jsapi-ticket answers). The url is the page\'s, as the page has it; its #fragment ' +
        'is ignored and nothing in it is escaped. An account that has not authorized the component: apiCode 4010. Needs a caller key ' +
        '(see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: AuthorizerSignatureRequestSchema,
      response: { 200: envelopeOf(SignatureDataSchema), 429: ThrottledSchema }
    },
    ...guarded
  }, (request, reply) => {
    const { componentAppId, authorizerAppId, url } = request.body
    checkUrl(url)
    const kept = app.authorizerTickets.fromHot(componentAppId, authorizerAppId, 'jsapi')
    if (kept) {
      app.sendSuccess(request, reply, AUTHORIZER_SIGNATURE_ROUTE, signatureJson(app.authorizerTickets.signed(authorizerAppId, kept, url)))
      return
    }
    return app.authorizerTickets.signature(componentAppId, authorizerAppId, url, context(request, componentAppId)).then((data) => {
      app.sendSuccess(request, reply, AUTHORIZER_SIGNATURE_ROUTE, signatureJson(data))
    })
  })
}

export default authorizerTicketRoutes
