/**
 * The component routes (this service's own: GenAuth has no Open Platform method), in the GenAuth envelope. A component
 * token needs no secret from the caller (the component's is configured here), so the caller key is what protects it:
 * without AUTH_TOKENS these routes refuse every request, unless COMPONENT_ROUTES_WITHOUT_KEYS=true.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import { APP_ID_PATTERN, CallerKeySecurity, EnvelopeSchema, SdkHeadersSchema, ThrottledSchema, envelopeOf, tokenSuccess as success } from '../schemas/token.js'

export const COMPONENT_TOKEN_ROUTE = '/api/v3/get-component-access-token'
export const PRE_AUTH_CODE_ROUTE = '/api/v3/get-component-pre-auth-code'

const PreAuthCodeEnvelopeSchema = envelopeOf(Type.Object({
  preAuthCode: Type.String({ description: 'For the authorization link (componentloginpage / bindcomponent): a new one at every call' }),
  expiresIn: Type.Integer({ description: 'Seconds it has left (WeChat gives 1800)' })
}))

export const ComponentTokenRequestSchema = Type.Object({
  componentAppId: Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'The component\'s appId, one of WECHAT_COMPONENTS' })
})

export interface OpenPlatformRouteOptions {
  /** Whether callers are identified (AUTH_TOKENS), or the operator opted in to serving them without (COMPONENT_ROUTES_WITHOUT_KEYS). */
  open: boolean
}

const openPlatformRoutes: FastifyPluginAsyncTypebox<OpenPlatformRouteOptions> = async (app, { open }) => {
  /** Without caller keys, refused unless the operator said otherwise: nothing else stands before a component's credentials. */
  const keyed = async (): Promise<void> => {
    if (!open) {
      throw new AppError('UNAUTHORIZED', 'The component routes need caller keys (AUTH_TOKENS), or COMPONENT_ROUTES_WITHOUT_KEYS=true: ' +
        'a component\'s credentials need no secret from the caller')
    }
  }

  app.post(COMPONENT_TOKEN_ROUTE, {
    schema: {
      summary: 'Get the component_access_token of an Open Platform third-party platform',
      operationId: 'getComponentAccessToken',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'One token per component of WECHAT_COMPONENTS, fetched with the component_verify_ticket WeChat last pushed to ' +
        '/wechat/components/{componentAppId}/events, cached, refreshed ahead and fetched once for any number of callers and instances. ' +
        'Without a usable ticket: apiCode 4009, and WeChat is asked to push one. Needs a caller key (see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: ComponentTokenRequestSchema,
      headers: SdkHeadersSchema,
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'componentAppId' },
    onRequest: [keyed, ...app.limits.perCaller],
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { componentAppId } = request.body
    const kept = app.componentTokens.fromHot(componentAppId)
    if (kept) {
      app.finish(request, reply, 200, COMPONENT_TOKEN_ROUTE)
      reply.send(success(request.id, kept))
      return
    }
    return app.componentTokens.afterHotMiss(componentAppId, context(request, componentAppId)).then((token) => {
      app.finish(request, reply, 200, COMPONENT_TOKEN_ROUTE)
      return success(request.id, token)
    })
  })

  app.post(PRE_AUTH_CODE_ROUTE, {
    schema: {
      summary: 'Get a pre-auth code of an Open Platform third-party platform, for an authorization link',
      operationId: 'getComponentPreAuthCode',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'A new pre_auth_code (api_create_preauthcode, with the component\'s cached token) at every call: one per ' +
        'authorization link. Needs a caller key (see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: ComponentTokenRequestSchema,
      headers: SdkHeadersSchema,
      response: { 200: PreAuthCodeEnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'componentAppId' },
    onRequest: [keyed, ...app.limits.perCaller],
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { componentAppId } = request.body
    const code = await app.componentTokens.preAuthCode(componentAppId, context(request, componentAppId))
    app.finish(request, reply, 200, PRE_AUTH_CODE_ROUTE)
    return { statusCode: 200, message: 'Operation successful', requestId: request.id, data: { preAuthCode: code.accessToken, expiresIn: code.expiresIn } }
  })
}

export default openPlatformRoutes
