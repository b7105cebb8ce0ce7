/**
 * The component routes (this service's own: GenAuth has no Open Platform method), in the GenAuth envelope. A component
 * token needs no secret from the caller (the component's is configured here), so the caller key is what protects it:
 * without AUTH_TOKENS these routes refuse every request, unless COMPONENT_ROUTES_WITHOUT_KEYS=true.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import type { ServedToken } from '../tokens/rules.js'
import { APP_ID_PATTERN, CallerKeySecurity, EnvelopeSchema, ThrottledSchema, envelopeOf, tokenDataJson } from '../schemas/token.js'

export const COMPONENT_TOKEN_ROUTE = '/api/v3/get-component-access-token'
export const PRE_AUTH_CODE_ROUTE = '/api/v3/get-component-pre-auth-code'
export const AUTHORIZER_TOKEN_ROUTE = '/api/v3/get-authorizer-access-token'
export const AUTHORIZATION_ROUTE = '/api/v3/exchange-authorization-code'

const PreAuthCodeEnvelopeSchema = envelopeOf(Type.Object({
  preAuthCode: Type.String({ description: 'For the authorization link (componentloginpage / bindcomponent): a new one at every call' }),
  expiresIn: Type.Integer({ description: 'Seconds it has left (WeChat gives 1800)' })
}))

export const ComponentTokenRequestSchema = Type.Object({
  componentAppId: Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'The component\'s appId, one of WECHAT_COMPONENTS' })
})

export const AuthorizerTokenRequestSchema = Type.Object({
  componentAppId: ComponentTokenRequestSchema.properties.componentAppId,
  authorizerAppId: Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'The appId of an account (Official Account or Mini Program) that authorized the component' })
})

export const AuthorizationRequestSchema = Type.Object({
  componentAppId: ComponentTokenRequestSchema.properties.componentAppId,
  authorizationCode: Type.String({ pattern: '^[\\u0021-\\u007e]{1,512}$', description: 'The auth_code of the authorization redirect (10 minutes, once; the `authorized` event carries the same one)' })
})

const AuthorizationEnvelopeSchema = envelopeOf(Type.Object({
  authorizerAppId: Type.String({ description: 'The account that authorized the component' }),
  accessToken: Type.String({ description: 'Its authorizer_access_token' }),
  expiresAt: Type.Integer({ description: 'Epoch milliseconds' }),
  expiresIn: Type.Integer({ description: 'Seconds it has left' })
}))

export interface OpenPlatformRouteOptions {
  /** Whether callers are identified (AUTH_TOKENS), or the operator opted in to serving them without (COMPONENT_ROUTES_WITHOUT_KEYS). */
  open: boolean
}

/**
 * The onRequest hook of every component route (an authorizer's tickets' too): without caller keys, refused unless the
 * operator said otherwise: nothing else stands before a component's credentials.
 */
export function componentKeyRule ({ open }: OpenPlatformRouteOptions): () => Promise<void> {
  return async (): Promise<void> => {
    if (!open) {
      throw new AppError('UNAUTHORIZED', 'The component routes need caller keys (AUTH_TOKENS), or COMPONENT_ROUTES_WITHOUT_KEYS=true: ' +
        'a component\'s credentials need no secret from the caller')
    }
  }
}

const openPlatformRoutes: FastifyPluginAsyncTypebox<OpenPlatformRouteOptions> = async (app, options) => {
  const keyed = componentKeyRule(options)

  /** A token in the envelope: from the hot cache at once (no promise on the hot path), else once the service has it. */
  function answer (request: FastifyRequest, reply: FastifyReply, route: string, kept: ServedToken | undefined,
    miss: () => Promise<ServedToken>): Promise<void> | undefined {
    if (kept) {
      app.sendSuccess(request, reply, route, tokenDataJson(kept))
      return
    }
    return miss().then((token) => { app.sendSuccess(request, reply, route, tokenDataJson(token)) })
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
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'componentAppId' },
    onRequest: [keyed, ...app.limits.perCaller],
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { componentAppId } = request.body
    return answer(request, reply, COMPONENT_TOKEN_ROUTE, app.componentTokens.fromHot(componentAppId),
      () => app.componentTokens.afterHotMiss(componentAppId, context(request, componentAppId)))
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

  app.post(AUTHORIZER_TOKEN_ROUTE, {
    schema: {
      summary: 'Get the authorizer_access_token of an account that authorized an Open Platform third-party platform',
      operationId: 'getAuthorizerAccessToken',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'One token per authorizer, fetched with the component\'s token and the refresh token kept here since the authorization ' +
        '(never lost: recovered from WeChat\'s authorizer list when no store or instance holds it), cached, refreshed ahead and fetched once ' +
        'for any number of callers and instances. An account that has not authorized the component: apiCode 4010. Needs a caller key ' +
        '(see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: AuthorizerTokenRequestSchema,
      response: { 200: EnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'componentAppId' },
    onRequest: [keyed, ...app.limits.perCaller],
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { componentAppId, authorizerAppId } = request.body
    return answer(request, reply, AUTHORIZER_TOKEN_ROUTE, app.authorizerTokens.fromHot(componentAppId, authorizerAppId),
      () => app.authorizerTokens.afterHotMiss(componentAppId, authorizerAppId, context(request, componentAppId)))
  })

  app.post(AUTHORIZATION_ROUTE, {
    schema: {
      summary: 'Exchange the authorization code of an Open Platform authorization redirect',
      operationId: 'exchangeAuthorizationCode',
      tags: ['open-platform'],
      security: CallerKeySecurity,
      description: 'The auth_code WeChat appends to the redirect of an authorization link, exchanged once (api_query_auth) for the ' +
        'account\'s refresh token, kept here, and its first token, answered. The `authorized` event pushed to the callback carries the same ' +
        'code and is exchanged too: whichever comes second is answered from the first, without WeChat. A code WeChat refuses: apiCode 3018. ' +
        'Needs a caller key (see COMPONENT_ROUTES_WITHOUT_KEYS).',
      body: AuthorizationRequestSchema,
      response: { 200: AuthorizationEnvelopeSchema, 429: ThrottledSchema }
    },
    config: { appField: 'componentAppId' },
    onRequest: [keyed, ...app.limits.perCaller],
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { componentAppId, authorizationCode } = request.body
    const authorization = await app.authorizerTokens.exchange(componentAppId, authorizationCode, context(request, componentAppId))
    app.finish(request, reply, 200, AUTHORIZATION_ROUTE)
    return {
      statusCode: 200,
      message: 'Operation successful',
      requestId: request.id,
      data: { authorizerAppId: authorization.authorizerAppId, accessToken: authorization.accessToken, expiresAt: authorization.expiresAt, expiresIn: authorization.expiresIn }
    }
  })
}

export default openPlatformRoutes
