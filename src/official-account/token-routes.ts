/** The GenAuth token routes (current and deprecated), and the passive refresh route for a token WeChat refused. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { context } from '../request-context.js'
import { CallerKeySecurity, EnvelopeSchema, RefreshRequestSchema, ThrottledSchema, TokenRequestSchema, tokenData, tokenDataJson } from '../schemas/token.js'

/** RFC 9745 Deprecation: a past date (2024-01-01), meaning already deprecated; the successor is named in Link. */
const DEPRECATION = '@1704067200'
export const CURRENT_ROUTE = '/api/v3/get-wechat-access-token-info'
export const OBSOLETE_ROUTE = '/api/v3/get-wechat-access-token'
export const REFRESH_ROUTE = '/api/v3/refresh-wechat-access-token'

const routes = [
  { url: CURRENT_ROUTE, deprecated: false, operationId: 'getWechatAccessTokenInfo', summary: 'Get a WeChat Official Account / Mini Program access token' },
  { url: OBSOLETE_ROUTE, deprecated: true, operationId: 'getWechatAccessToken', summary: `Obsolete: use ${CURRENT_ROUTE}` }
]

const tokenRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.routeHeaders(OBSOLETE_ROUTE, { deprecation: DEPRECATION, link: `<${CURRENT_ROUTE}>; rel="successor-version"` })
  for (const route of routes) {
    app.post(route.url, {
      schema: {
        summary: route.summary,
        operationId: route.operationId,
        tags: ['tokens'],
        security: CallerKeySecurity,
        deprecated: route.deprecated,
        body: TokenRequestSchema,
        response: { 200: EnvelopeSchema, 429: ThrottledSchema }
      },
      onRequest: app.limits.perCaller,
      preHandler: app.limits.perApp
    }, (request, reply) => {
      const { appId, appSecret } = request.body
      const kept = app.tokens.fromHot(appId, appSecret)
      if (kept) {
        app.sendSuccess(request, reply, route.url, tokenDataJson(kept))
        return
      }
      return app.tokens.afterHotMiss(appId, appSecret, context(request, appId)).then((token) => {
        app.sendSuccess(request, reply, route.url, tokenDataJson(token))
      })
    })
  }

  app.post(REFRESH_ROUTE, {
    schema: {
      summary: 'Report a token WeChat refused (40001 / 42001) and get a working one',
      operationId: 'refreshWechatAccessToken',
      tags: ['tokens'],
      security: CallerKeySecurity,
      description: 'Refreshes only while the reported token is still the current one; otherwise answers the newer token. ' +
        'In stable mode this is a forced refresh, limited to 20 a day and 30 s apart; in classic mode a normal fetch, 30 s apart ' +
        '(apiCode 4001 past them, with the current token). While the app\'s fetches are backed off after WeChat failed, apiCode 4007 ' +
        'with the current token and retry-after.',
      body: RefreshRequestSchema,
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { appId, appSecret, accessToken } = request.body
    const outcome = await app.tokens.refreshReported(appId, appSecret, accessToken, context(request, appId))
    const data = outcome.token ? { data: tokenData(outcome.token) } : {}
    app.finish(request, reply, outcome.notice?.statusCode ?? 200, REFRESH_ROUTE)
    if (outcome.notice) {
      const { statusCode, apiCode, message, retryAfterSeconds } = outcome.notice
      if (retryAfterSeconds !== undefined) reply.header('retry-after', String(retryAfterSeconds))
      return { statusCode, message, apiCode, requestId: request.id, ...data }
    }
    return { statusCode: 200, message: 'Operation successful', requestId: request.id, ...data }
  })
}

export default tokenRoutes
