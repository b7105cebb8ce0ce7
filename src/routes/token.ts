/** The two GenAuth token routes: the current one and the deprecated one, same body, same envelope. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { EnvelopeSchema, SdkHeadersSchema, TokenRequestSchema } from '../schemas/token.js'
import type { TokenService } from '../token-service.js'

declare module 'fastify' {
  interface FastifyInstance {
    tokens: TokenService
  }
}

/** RFC 9745 Deprecation: a past date (2024-01-01), meaning already deprecated; the successor is named in Link. */
const DEPRECATION = '@1704067200'
export const CURRENT_ROUTE = '/api/v3/get-wechat-access-token-info'
export const OBSOLETE_ROUTE = '/api/v3/get-wechat-access-token'

const routes = [
  { url: CURRENT_ROUTE, deprecated: false, summary: 'Get a WeChat Official Account / Mini Program access token' },
  { url: OBSOLETE_ROUTE, deprecated: true, summary: `Obsolete: use ${CURRENT_ROUTE}` }
]

async function markDeprecated (_request: FastifyRequest, reply: FastifyReply) {
  reply.header('deprecation', DEPRECATION)
  reply.header('link', `<${CURRENT_ROUTE}>; rel="successor-version"`)
}

const tokenRoutes: FastifyPluginAsyncTypebox = async (app) => {
  for (const route of routes) {
    app.post(route.url, {
      schema: {
        summary: route.summary,
        deprecated: route.deprecated,
        body: TokenRequestSchema,
        headers: SdkHeadersSchema,
        response: { 200: EnvelopeSchema }
      },
      ...(route.deprecated ? { onRequest: markDeprecated } : {})
    }, async (request) => {
      const { appId, appSecret } = request.body
      request.log = request.log.child({ appId, caller: callerOf(request) })
      const token = await app.tokens.getToken(appId, appSecret)
      return {
        statusCode: 200,
        message: 'Operation successful',
        requestId: request.id,
        data: {
          accessToken: token.accessToken,
          expiresAt: String(Math.floor(token.expiresAt / 1000)),
          expiresIn: token.expiresIn
        }
      }
    })
  }
}

/** Who is asking, from the GenAuth / Authing SDK headers; only for logs. */
function callerOf (request: FastifyRequest): string | undefined {
  const h = request.headers
  const value = h['x-authing-app-id'] ?? h['x-genauth-app-id'] ?? h['x-authing-userpool-id']
  return typeof value === 'string' ? value.slice(0, 64) : undefined
}

export default tokenRoutes
