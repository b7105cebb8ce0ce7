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
 *
 * Routed before the pass-through's `/cgi-bin/*` (a static path wins over a wildcard), which still refuses
 * api_component_token with another method or spelling.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { ComponentConfig } from '../config.js'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import { componentSpace } from '../open-platform/verify-tickets.js'
import { context } from '../request-context.js'
import { APP_ID_PATTERN, APP_SECRET_PATTERN, CallerKeySecurity } from '../schemas/token.js'
import type { ServedToken } from '../tokens/rules.js'
import { wechatErrorHandler, type Dialect } from './errors.js'
import type { HandedOut } from './handed-out.js'

export const COMPONENT_TOKEN_PATH = '/cgi-bin/component/api_component_token'
export const PRE_AUTH_CODE_PATH = '/cgi-bin/component/api_create_preauthcode'

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

export const WechatComponentTokenSchema = Type.Object({
  component_access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the token has left (not always 7200: a cached token has less)' })
}, { description: 'The component token, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

export const WechatPreAuthCodeSchema = Type.Object({
  pre_auth_code: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the code has left (WeChat gives 1800)' })
}, { description: 'A new pre-auth code, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

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

/** api_create_preauthcode: a token not handed out here for the component is 40001, as WeChat answers a stale one. */
const PRE_AUTH_CODE: Dialect = {
  own: {
    APP_NOT_CONFIGURED: [40013, 'invalid component appid'],
    WECHAT_TOKEN_REFUSED: [40001, 'invalid credential, access_token is invalid or not latest']
  },
  fields: {
    ...appidFields,
    component_access_token: { missing: [41001, 'component_access_token missing'], invalid: [40001, 'invalid credential, access_token is invalid or not latest'] }
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
    if (!components.has(appId)) throw new AppError('APP_NOT_CONFIGURED', `componentAppId ${appId} is not one of the configured WECHAT_COMPONENTS`)
    if (await handedOut.subjectOf(request.query.component_access_token) !== subjectOf(appId)) {
      throw new AppError('WECHAT_TOKEN_REFUSED', 'This component_access_token was not handed out here for this component, or it expired: fetch one again')
    }
    const code = await app.componentTokens.preAuthCode(appId, context(request, appId))
    app.finish(request, reply, 200, PRE_AUTH_CODE_PATH)
    return { pre_auth_code: code.accessToken, expires_in: code.expiresIn }
  })
}

export default componentRoutes
