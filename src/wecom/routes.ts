/** The WeCom routes (this service's own: GenAuth has no WeCom method), in the GenAuth envelope. */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { context } from '../request-context.js'
import { CallerKeySecurity, EnvelopeSchema, SdkHeadersSchema, ThrottledSchema } from '../schemas/token.js'
import type { ServedToken } from '../tokens/rules.js'

export const WECOM_TOKEN_ROUTE = '/api/v3/get-wecom-access-token'

export const WecomTokenRequestSchema = Type.Object({
  corpId: Type.String({ pattern: '^w[wx][0-9a-f]{16}$', description: 'WeCom corpId (ww or wx and 16 lower-case hex)' }),
  corpSecret: Type.String({ pattern: '^[A-Za-z0-9_-]{16,128}$', description: 'The secret of one application of the corp (WECOM_APPS)' })
})

function success (requestId: string, token: ServedToken) {
  return {
    statusCode: 200,
    message: 'Operation successful',
    requestId,
    data: { accessToken: token.accessToken, expiresAt: String(Math.floor(token.expiresAt / 1000)), expiresIn: token.expiresIn }
  }
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
      headers: SdkHeadersSchema,
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'corpId' },
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { corpId, corpSecret } = request.body
    const kept = app.wecomTokens.fromHot(corpId, corpSecret)
    if (kept) {
      app.finish(request, reply, 200, WECOM_TOKEN_ROUTE)
      reply.send(success(request.id, kept))
      return
    }
    return app.wecomTokens.getToken(corpId, corpSecret, context(request, corpId)).then((token) => {
      app.finish(request, reply, 200, WECOM_TOKEN_ROUTE)
      return success(request.id, token)
    })
  })
}

export default wecomRoutes
