/**
 * The Open Platform's component endpoints in WeChat's own shapes (WECHAT_COMPAT_API with WECHAT_COMPONENTS), so that a
 * third-party platform's SDK pointed at this service gets the one cached component_access_token of the component:
 *
 * - `POST /cgi-bin/component/api_component_token {component_appid, component_appsecret, component_verify_ticket}`:
 *   the caller proves the component's secret (compared in constant time with the configured one), as a caller of
 *   `/cgi-bin/token` proves an app's. The verify ticket it sends is not read: the one WeChat last pushed to this
 *   service is what the token is fetched with (an SDK's own copy is at best as new, often older or none).
 * - `POST /cgi-bin/component/api_create_preauthcode?component_access_token {component_appid}`: a new pre-auth code,
 *   for a component token handed out on the endpoint above for that component (the call to WeChat is made with the
 *   component's current token, so a token the cache replaced meanwhile still proves the caller got one here).
 * - `POST /cgi-bin/component/api_authorizer_token?component_access_token {component_appid, authorizer_appid,
 *   authorizer_refresh_token}`: the authorizer's cached token (app.authorizerTokens), for a component token handed out
 *   here for that component. The refresh token the caller sends is not read: the one kept here since the authorization
 *   is what the token is fetched with, and it is the one answered, so that an SDK that stores it holds the current one.
 * - `POST /cgi-bin/component/api_query_auth?component_access_token {component_appid, authorization_code}`: the code
 *   exchanged once across instances (app.authorizerTokens.exchange, shared with the `authorized` event and the GenAuth
 *   route), answered as WeChat's `authorization_info` with the refresh token kept here. `func_info` is not kept: `[]`.
 *
 * Authorizer tokens answered on both are remembered as handed out (handed-out.ts) under their credential's subject.
 *
 * Routed before the pass-through's `/cgi-bin/*` (a static path wins over a wildcard), which still refuses
 * api_component_token with another method or spelling.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { ComponentConfig } from '../config.js'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import { authorizerSpace } from '../open-platform/refresh-tokens.js'
import { componentSpace } from '../open-platform/verify-tickets.js'
import { context } from '../request-context.js'
import { APP_ID_PATTERN, APP_SECRET_PATTERN, CallerKeySecurity } from '../schemas/token.js'
import type { ServedToken } from '../tokens/rules.js'
import { wechatErrorHandler, type Dialect } from './errors.js'
import type { HandedOut } from './handed-out.js'

export const COMPONENT_TOKEN_PATH = '/cgi-bin/component/api_component_token'
export const PRE_AUTH_CODE_PATH = '/cgi-bin/component/api_create_preauthcode'
export const AUTHORIZER_TOKEN_PATH = '/cgi-bin/component/api_authorizer_token'
export const QUERY_AUTH_PATH = '/cgi-bin/component/api_query_auth'

const ComponentAppId = Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'The component\'s appId, one of WECHAT_COMPONENTS' })

export const ComponentTokenBodySchema = Type.Object({
  component_appid: ComponentAppId,
  component_appsecret: Type.String({ pattern: APP_SECRET_PATTERN, maxLength: 32, description: 'The component\'s AppSecret (32 hex), as configured' }),
  component_verify_ticket: Type.Optional(Type.String({
    maxLength: 1024,
    description: 'Not read: the ticket WeChat last pushed to this service is the one used'
  }))
})

export const PreAuthCodeQuerySchema = Type.Object({
  component_access_token: Type.String({ minLength: 1, maxLength: 2048, description: 'A component token handed out on api_component_token here' })
})
export const PreAuthCodeBodySchema = Type.Object({ component_appid: ComponentAppId })

/** The query of every call made with a component token (api_create_preauthcode, api_authorizer_token, api_query_auth). */
export const ComponentTokenQuerySchema = PreAuthCodeQuerySchema

export const AuthorizerTokenBodySchema = Type.Object({
  component_appid: ComponentAppId,
  authorizer_appid: Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'An account that authorized the component' }),
  authorizer_refresh_token: Type.Optional(Type.String({
    maxLength: 1024,
    description: 'Not read: the refresh token kept here since the authorization is used, and answered'
  }))
})

export const QueryAuthBodySchema = Type.Object({
  component_appid: ComponentAppId,
  // The pattern of the GenAuth route's authorizationCode (src/open-platform/routes.ts).
  authorization_code: Type.String({
    pattern: '^[\\u0021-\\u007e]{1,512}$',
    description: 'The auth_code of an authorization (the redirect\'s, or the `authorized` event\'s)'
  })
})

export const WechatComponentTokenSchema = Type.Object({
  component_access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the token has left (not always 7200: a cached token has less)' })
}, { description: 'The component token, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

export const WechatPreAuthCodeSchema = Type.Object({
  pre_auth_code: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the code has left (WeChat gives 1800)' })
}, { description: 'A new pre-auth code, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

export const WechatAuthorizerTokenSchema = Type.Object({
  authorizer_access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the token has left (not always 7200: a cached token has less)' }),
  authorizer_refresh_token: Type.String({ description: 'The refresh token kept here (the current one; not the one sent)' })
}, { description: 'The authorizer\'s token, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

export const WechatAuthorizationSchema = Type.Object({
  authorization_info: Type.Object({
    authorizer_appid: Type.String(),
    authorizer_access_token: Type.String(),
    expires_in: Type.Integer({ description: 'Seconds the token has left' }),
    authorizer_refresh_token: Type.String({ description: 'The refresh token kept here' }),
    func_info: Type.Array(Type.Unknown(), { description: 'Always []: the permission sets WeChat lists are not kept here' })
  })
}, { description: 'The authorization, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

const WechatErrorSchema = Type.Object({ errcode: Type.Integer(), errmsg: Type.String() })

const appidFields: Dialect['fields'] = {
  component_appid: { missing: [41002, 'component_appid missing'], invalid: [40013, 'invalid component appid'] }
}

/** api_component_token: WeChat's component errcodes (src/wechat/errcodes.ts, COMPONENT). */
const COMPONENT_TOKEN: Dialect = {
  own: {
    APP_NOT_CONFIGURED: [40013, 'invalid component appid'],
    SECRET_MISMATCH: [40125, 'invalid component appsecret']
  },
  fields: {
    ...appidFields,
    component_appsecret: { missing: [41004, 'component_appsecret missing'], invalid: [40125, 'invalid component appsecret'] },
    component_verify_ticket: { missing: [40097, 'invalid args'], invalid: [40097, 'invalid args'] }
  }
}

/** The errcode of a component token not handed out here for the component: WeChat's answer to a stale one. */
const tokenRefused: [number, string] = [40001, 'invalid credential, access_token is invalid or not latest']
const withComponentToken: Dialect['fields'] = {
  ...appidFields,
  component_access_token: { missing: [41001, 'component_access_token missing'], invalid: tokenRefused }
}

/** api_create_preauthcode: a token not handed out here for the component is 40001, as WeChat answers a stale one. */
const PRE_AUTH_CODE: Dialect = {
  own: {
    APP_NOT_CONFIGURED: [40013, 'invalid component appid'],
    WECHAT_TOKEN_REFUSED: tokenRefused
  },
  fields: withComponentToken
}

/**
 * api_authorizer_token: an account that has not authorized the component (4010) is WeChat's 61003 ("component is not
 * authorized by this account"), not 61023: the refresh token the caller sent was never looked at, so it is not what
 * is wrong. (When WeChat itself answers 61023 to the refresh token kept here, that is passed on as it is.)
 */
const AUTHORIZER_TOKEN: Dialect = {
  own: {
    APP_NOT_CONFIGURED: [40013, 'invalid component appid'],
    WECHAT_TOKEN_REFUSED: tokenRefused,
    AUTHORIZER_NOT_AUTHORIZED: [61003, 'component is not authorized by this account']
  },
  fields: {
    ...withComponentToken,
    authorizer_appid: { missing: [41002, 'authorizer_appid missing'], invalid: [40013, 'invalid authorizer appid'] },
    authorizer_refresh_token: { missing: [40097, 'invalid args'], invalid: [40097, 'invalid args'] }
  }
}

/**
 * api_query_auth: a code that could not be exchanged (3018: another instance's exchange of it failed) is WeChat's
 * 61009; WeChat's own 61009 / 61010 pass on as they are.
 */
const QUERY_AUTH: Dialect = {
  own: {
    APP_NOT_CONFIGURED: [40013, 'invalid component appid'],
    WECHAT_TOKEN_REFUSED: tokenRefused,
    AUTHORIZATION_CODE_INVALID: [61009, 'code is invalid'],
    AUTHORIZER_NOT_AUTHORIZED: [61003, 'component is not authorized by this account']
  },
  fields: {
    ...withComponentToken,
    authorization_code: { missing: [41008, 'missing code'], invalid: [61009, 'code is invalid'] }
  }
}

export interface ComponentRouteOptions {
  /** The components of WECHAT_COMPONENTS, with their secrets (kept in process memory only). */
  components: ReadonlyMap<string, ComponentConfig>
  handedOut: HandedOut
  /** Remembers a token handed out (the same as the other token endpoints'). */
  handOut: (token: ServedToken, subject: string) => Promise<ServedToken>
}

const componentRoutes: FastifyPluginAsyncTypebox<ComponentRouteOptions> = async (app, { components, handedOut, handOut }) => {
  /** The subject a component's token is remembered under: its change messages' subject. */
  const subjectOf = (appId: string): string => app.componentTokens.credential.subject(componentSpace(appId))
  const answer = (token: ServedToken) => ({ component_access_token: token.accessToken, expires_in: token.expiresIn })

  /** The configured component whose secret this is (APP_NOT_CONFIGURED, SECRET_MISMATCH), compared in constant time. */
  function admit (appId: string, secret: string): void {
    const component = components.get(appId)
    if (component === undefined) throw new AppError('APP_NOT_CONFIGURED', `componentAppId ${appId} is not one of the configured WECHAT_COMPONENTS`)
    // Both are 32 hexadecimal digits (the schema checked the one sent): equal lengths, compared in constant time.
    if (!sameString(component.appSecret, secret)) throw new AppError('SECRET_MISMATCH', 'component_appsecret does not match the configured secret of this component')
  }

  /**
   * A call made with a component token: for a configured component (APP_NOT_CONFIGURED), with a token handed out on
   * api_component_token for it, current or not until it expires (WECHAT_TOKEN_REFUSED).
   */
  async function admitToken (appId: string, token: string): Promise<void> {
    if (!components.has(appId)) throw new AppError('APP_NOT_CONFIGURED', `componentAppId ${appId} is not one of the configured WECHAT_COMPONENTS`)
    if (await handedOut.subjectOf(token) !== subjectOf(appId)) {
      throw new AppError('WECHAT_TOKEN_REFUSED', 'This component_access_token was not handed out here for this component, or it expired: fetch one again')
    }
  }

  app.post(COMPONENT_TOKEN_PATH, {
    schema: {
      summary: 'The Open Platform\'s POST /cgi-bin/component/api_component_token, answered from the cache',
      operationId: 'wechatComponentToken',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'The component\'s secret is checked against WECHAT_COMPONENTS; component_verify_ticket is not read (the ticket ' +
        'WeChat last pushed to this service is used). Without a usable ticket: errcode 61006, and WeChat is asked to push one.',
      body: ComponentTokenBodySchema,
      response: { 200: Type.Union([WechatComponentTokenSchema, WechatErrorSchema]) }
    },
    config: { appField: 'component_appid' },
    errorHandler: wechatErrorHandler(app, COMPONENT_TOKEN),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { component_appid: appId, component_appsecret: secret } = request.body
    admit(appId, secret)
    const kept = app.componentTokens.fromHot(appId)
    if (kept && handedOut.known(kept, subjectOf(appId))) {
      app.finish(request, reply, 200, COMPONENT_TOKEN_PATH)
      reply.send(answer(kept))
      return
    }
    return (kept ? Promise.resolve(kept) : app.componentTokens.afterHotMiss(appId, context(request, appId)))
      .then(async (token) => await handOut(token, subjectOf(appId)))
      .then((token) => {
        app.finish(request, reply, 200, COMPONENT_TOKEN_PATH)
        return answer(token)
      })
  })

  app.post(PRE_AUTH_CODE_PATH, {
    schema: {
      summary: 'The Open Platform\'s POST /cgi-bin/component/api_create_preauthcode, with the cached component token',
      operationId: 'wechatComponentPreAuthCode',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'For a component_access_token handed out on /cgi-bin/component/api_component_token for this component (until it ' +
        'expires): a new pre_auth_code at every call, fetched with the component\'s current token.',
      querystring: PreAuthCodeQuerySchema,
      body: PreAuthCodeBodySchema,
      response: { 200: Type.Union([WechatPreAuthCodeSchema, WechatErrorSchema]) }
    },
    config: { appField: 'component_appid' },
    errorHandler: wechatErrorHandler(app, PRE_AUTH_CODE),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { component_appid: appId } = request.body
    await admitToken(appId, request.query.component_access_token)
    const code = await app.componentTokens.preAuthCode(appId, context(request, appId))
    app.finish(request, reply, 200, PRE_AUTH_CODE_PATH)
    return { pre_auth_code: code.accessToken, expires_in: code.expiresIn }
  })

  /** The subject an authorizer's token is remembered under: its change messages' subject. */
  const authorizerSubject = (componentAppId: string, authorizerAppId: string): string =>
    app.authorizerTokens.credential.subject(authorizerSpace(componentAppId, authorizerAppId))

  /**
   * The refresh token to answer with the authorizer's token, read after it (a fetch that made WeChat rotate it saved
   * the new one first). None held here (a store that lost it, before any instance recovered it): the caller's own, as
   * the best it can keep, else "".
   */
  async function refreshTokenOf (componentAppId: string, authorizerAppId: string, sent?: string): Promise<string> {
    return await app.authorizerTokens.refreshToken(componentAppId, authorizerAppId) ?? sent ?? ''
  }

  app.post(AUTHORIZER_TOKEN_PATH, {
    schema: {
      summary: 'The Open Platform\'s POST /cgi-bin/component/api_authorizer_token, answered from the cache',
      operationId: 'wechatComponentAuthorizerToken',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'For a component_access_token handed out on /cgi-bin/component/api_component_token for this component: the ' +
        'authorizer\'s cached token. authorizer_refresh_token is not read (the one kept here since the authorization is used), and ' +
        'the one kept here is answered. An account that has not authorized the component: errcode 61003.',
      querystring: ComponentTokenQuerySchema,
      body: AuthorizerTokenBodySchema,
      response: { 200: Type.Union([WechatAuthorizerTokenSchema, WechatErrorSchema]) }
    },
    config: { appField: 'component_appid' },
    errorHandler: wechatErrorHandler(app, AUTHORIZER_TOKEN),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { component_appid: appId, authorizer_appid: authorizerAppId, authorizer_refresh_token: sent } = request.body
    await admitToken(appId, request.query.component_access_token)
    const token = await app.authorizerTokens.getToken(appId, authorizerAppId, context(request, appId))
    const refreshToken = await refreshTokenOf(appId, authorizerAppId, sent)
    await handOut(token, authorizerSubject(appId, authorizerAppId))
    app.finish(request, reply, 200, AUTHORIZER_TOKEN_PATH)
    return { authorizer_access_token: token.accessToken, expires_in: token.expiresIn, authorizer_refresh_token: refreshToken }
  })

  app.post(QUERY_AUTH_PATH, {
    schema: {
      summary: 'The Open Platform\'s POST /cgi-bin/component/api_query_auth, exchanged once across instances',
      operationId: 'wechatComponentQueryAuth',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'For a component_access_token handed out on /cgi-bin/component/api_component_token for this component: the ' +
        'authorization code exchanged once (api_query_auth), whether the `authorized` event, the GenAuth route or this call has it first; ' +
        'the others are answered from that exchange. The refresh token is kept here, and answered. func_info is always [] (not kept).',
      querystring: ComponentTokenQuerySchema,
      body: QueryAuthBodySchema,
      response: { 200: Type.Union([WechatAuthorizationSchema, WechatErrorSchema]) }
    },
    config: { appField: 'component_appid' },
    errorHandler: wechatErrorHandler(app, QUERY_AUTH),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { component_appid: appId, authorization_code: code } = request.body
    await admitToken(appId, request.query.component_access_token)
    const authorization = await app.authorizerTokens.exchange(appId, code, context(request, appId))
    const { authorizerAppId } = authorization
    const refreshToken = await refreshTokenOf(appId, authorizerAppId)
    await handOut(authorization, authorizerSubject(appId, authorizerAppId))
    app.finish(request, reply, 200, QUERY_AUTH_PATH)
    return {
      authorization_info: {
        authorizer_appid: authorizerAppId,
        authorizer_access_token: authorization.accessToken,
        expires_in: authorization.expiresIn,
        authorizer_refresh_token: refreshToken,
        func_info: []
      }
    }
  })
}

export default componentRoutes
