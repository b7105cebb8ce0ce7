/**
 * WeChat's own token endpoints, answered from the cache in WeChat's own shapes, so that a WeChat SDK pointed at this
 * service (its API host changed) gets the one shared token of each app, with every guarantee of the GenAuth routes:
 * `GET /cgi-bin/token` and `POST /cgi-bin/stable_token` (Official Accounts and Mini Programs), and WeCom's
 * `GET /cgi-bin/gettoken`; with WECHAT_COMPONENTS, the Open Platform's component token, pre-auth code, authorizer token
 * and authorization exchange (component-routes.ts). Errors are `{"errcode","errmsg"}` with HTTP 200, as WeChat answers (src/wechat-api/errors.ts).
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { AppError } from '../errors.js'
import { context } from '../request-context.js'
import { StoreError } from '../store/types.js'
import { WechatApiError } from '../wechat/errcodes.js'
import { APP_ID_PATTERN, APP_SECRET_PATTERN, CallerKeySecurity, jsonOnce } from '../schemas/token.js'
import type { ServedToken } from '../tokens/rules.js'
import { WecomTokenRequestSchema } from '../wecom/routes.js'
import { wechatErrorHandler, type Dialect } from './errors.js'
import { createHandedOut } from './handed-out.js'
import passthroughRoutes, { type PassthroughOptions } from './passthrough.js'
import componentRoutes from './component-routes.js'
import type { TicketType } from '../tokens/credential.js'
import type { ComponentConfig } from '../config.js'
import { parseAuthorizerSpace } from '../open-platform/refresh-tokens.js'

export const TOKEN_PATH = '/cgi-bin/token'
export const STABLE_TOKEN_PATH = '/cgi-bin/stable_token'
export const WECOM_TOKEN_PATH = '/cgi-bin/gettoken'
export const TICKET_PATH = '/cgi-bin/ticket/getticket'
export const WECOM_CORP_TICKET_PATH = '/cgi-bin/get_jsapi_ticket'
export const WECOM_AGENT_TICKET_PATH = '/cgi-bin/ticket/get'

const missing = (name: string): [number, string] => [name === 'appid' ? 41002 : 41004, `${name} missing`]

/** Official Account / Mini Program: what WeChat answers for a missing or malformed field. */
const OFFICIAL: Dialect = {
  fields: {
    grant_type: { missing: [40002, 'invalid grant_type'], invalid: [40002, 'invalid grant_type'] },
    appid: { missing: missing('appid'), invalid: [40013, 'invalid appid'] },
    secret: { missing: missing('secret'), invalid: [40125, 'invalid appsecret'] },
    force_refresh: { missing: [40097, 'invalid args'], invalid: [40097, 'invalid args'] }
  }
}

/** WeCom: 40001 is its wrong secret, 40013 its unknown corpId. */
const WECOM: Dialect = {
  own: { SECRET_MISMATCH: [40001, 'invalid credential'] },
  fields: {
    corpid: { missing: [41002, 'corpid missing'], invalid: [40013, 'invalid corpid'] },
    corpsecret: { missing: [41004, 'corpsecret missing'], invalid: [40001, 'invalid credential'] }
  }
}

const GrantType = Type.String({ const: 'client_credential', description: 'client_credential' })
const AppId = Type.String({ pattern: APP_ID_PATTERN, maxLength: 18, description: 'WeChat AppID (wx + 16 hex)' })
const Secret = Type.String({ pattern: APP_SECRET_PATTERN, maxLength: 32, description: 'WeChat AppSecret (32 hex)' })

export const TokenQuerySchema = Type.Object({ grant_type: GrantType, appid: AppId, secret: Secret })
export const StableTokenBodySchema = Type.Object({
  grant_type: GrantType,
  appid: AppId,
  secret: Secret,
  force_refresh: Type.Optional(Type.Boolean({ default: false, description: 'true: the passive refresh rules (docs/api.md)' }))
})
export const WecomTokenQuerySchema = Type.Object({
  corpid: WecomTokenRequestSchema.properties.corpId,
  corpsecret: WecomTokenRequestSchema.properties.corpSecret
})

export const WechatTokenSchema = Type.Object({
  access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the token has left (not always 7200: a cached token has less)' })
}, { description: 'The token, as WeChat answers it; an error is {errcode, errmsg} with HTTP 200' })

export const WechatErrorSchema = Type.Object({ errcode: Type.Integer(), errmsg: Type.String() })

export const WecomTokenSchema = Type.Object({
  errcode: Type.Integer({ description: '0' }),
  errmsg: Type.String({ description: 'ok' }),
  access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the token has left' })
}, { description: 'The token, as WeCom answers it; an error is {errcode, errmsg}' })

/** The subject an Official Account token is remembered under (its change messages' subject). */
const officialSubject = (appId: string): string => appId.toLowerCase()

/** WeChat's answer: the token and its whole seconds left (what WeChat's expires_in is for a token it gave earlier). */
const answer = (token: ServedToken) => ({ access_token: token.accessToken, expires_in: token.expiresIn })
/** WeChat's answer as JSON text, and WeCom's, made once per token and second (a hot token is sent as text). */
const answerJson = jsonOnce(answer)
const wecomAnswerJson = jsonOnce((token) => ({ errcode: 0, errmsg: 'ok', ...answer(token) }))

const AccessToken = Type.String({ minLength: 1, maxLength: 2048, description: 'An access token this service handed out' })
export const TicketQuerySchema = Type.Object({
  access_token: AccessToken,
  type: Type.Optional(Type.Unsafe<TicketType>({ type: 'string', enum: ['jsapi', 'wx_card'], default: 'jsapi' }))
})
export const WecomCorpTicketQuerySchema = Type.Object({ access_token: AccessToken })
export const WecomAgentTicketQuerySchema = Type.Object({
  access_token: AccessToken,
  type: Type.String({ const: 'agent_config', description: 'agent_config' })
})

export const WechatTicketSchema = Type.Object({
  errcode: Type.Integer({ description: '0' }),
  errmsg: Type.String({ description: 'ok' }),
  ticket: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds the ticket has left' })
}, { description: 'The ticket, as WeChat answers it; an error is {errcode, errmsg}' })

/** Tickets: a missing token is 41001; one this service never handed out, or not the app's current one, 40001. */
const TICKETS: Dialect = {
  own: { WECHAT_TOKEN_REFUSED: [40001, 'invalid credential, access_token is invalid or not latest'] },
  fields: {
    access_token: { missing: [41001, 'access_token missing'], invalid: [40001, 'invalid credential, access_token is invalid or not latest'] },
    type: { missing: [40097, 'invalid args'], invalid: [40097, 'invalid args'] }
  }
}
const WECOM_TICKETS: Dialect = {
  own: { WECHAT_TOKEN_REFUSED: [40014, 'invalid access_token'] },
  fields: {
    access_token: { missing: [41001, 'access_token missing'], invalid: [40014, 'invalid access_token'] },
    type: { missing: [40058, 'invalid parameter'], invalid: [40058, 'invalid parameter'] }
  }
}

/** A token the service did not hand out, or that is no longer the owner's current one: the SDK is to fetch one again. */
function notCurrent (): AppError {
  return new AppError('WECHAT_TOKEN_REFUSED', 'This access token was not handed out here, or is no longer the current one: fetch a token again')
}

/** WeChat refused this token on getticket before (remembered): its errcode, without asking WeChat again. */
function refusedByWechat (): AppError {
  return new AppError('WECHAT_TOKEN_REFUSED', 'WeChat refused this access token on getticket a while ago (remembered; WeChat is not asked again with it); ' +
    'it is replaced by a forced refresh (POST /cgi-bin/stable_token with force_refresh) or when it expires')
}

export interface WechatApiOptions {
  fingerprintKey?: string | undefined
  /** Whether WECHAT_APPS is set (an app missing from it is no longer served). */
  configured: boolean
  /** WECHAT_PASSTHROUGH: every other WeChat call passed through (src/wechat-api/passthrough.ts). */
  passthrough?: Omit<PassthroughOptions, 'handedOut'> | undefined
  /** WECHAT_COMPONENTS: the Open Platform's component endpoints too (src/wechat-api/component-routes.ts). */
  components?: ReadonlyMap<string, ComponentConfig> | undefined
  now?: (() => number) | undefined
}

const wechatApiRoutes: FastifyPluginAsyncTypebox<WechatApiOptions> = async (app, { fingerprintKey, configured, passthrough, components, now }) => {
  const handedOut = createHandedOut({ store: app.store, fingerprintKey, ...(now ? { now } : {}) })
  if (passthrough !== undefined) await app.register(passthroughRoutes, { ...passthrough, handedOut })
  /** Remembers a token handed out (at its first serving here: the hot path writes nothing). */
  async function handOut (token: ServedToken, subject: string): Promise<ServedToken> {
    if (!handedOut.known(token, subject)) {
      // Not remembered, a ticket call with it is answered 40001 and the SDK asks for a token again: not fatal.
      await handedOut.remember(token, subject).catch((err: unknown) => {
        app.log.warn({ err: err instanceof StoreError ? err.message : String(err) }, 'a token handed out could not be remembered in the store')
      })
    }
    return token
  }
  if (components !== undefined) await app.register(componentRoutes, { components, handedOut, handOut })
  const refuse = (dialect: Dialect) => wechatErrorHandler(app, dialect)
  const response = { 200: Type.Union([WechatTokenSchema, WechatErrorSchema]) }

  app.get(TOKEN_PATH, {
    schema: {
      summary: 'WeChat\'s GET /cgi-bin/token, answered from the cache',
      operationId: 'wechatToken',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      querystring: TokenQuerySchema,
      response
    },
    config: { appField: 'appid' },
    errorHandler: refuse(OFFICIAL),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { appid, secret } = request.query
    const kept = app.tokens.fromHot(appid, secret)
    if (kept && handedOut.known(kept, officialSubject(appid))) {
      app.sendJson(request, reply, TOKEN_PATH, answerJson(kept))
      return
    }
    return (kept ? Promise.resolve(kept) : app.tokens.afterHotMiss(appid, secret, context(request, appid)))
      .then(async (token) => await handOut(token, officialSubject(appid)))
      .then((token) => {
        app.finish(request, reply, 200, TOKEN_PATH)
        return answer(token)
      })
  })

  app.post(STABLE_TOKEN_PATH, {
    schema: {
      summary: 'WeChat\'s POST /cgi-bin/stable_token, answered from the cache',
      operationId: 'wechatStableToken',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'force_refresh: true replaces the app\'s current token under the passive refresh rules (spaced, limited); ' +
        'when it may not be replaced now, the current token is answered.',
      body: StableTokenBodySchema,
      response
    },
    config: { appField: 'appid' },
    errorHandler: refuse(OFFICIAL),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, async (request, reply) => {
    const { appid, secret, force_refresh: force } = request.body
    const ctx = context(request, appid)
    let token = app.tokens.fromHot(appid, secret) ?? await app.tokens.afterHotMiss(appid, secret, ctx)
    if (force === true) {
      // The caller cannot say which token it holds: the current one is the one reported, replaced only while it is
      // still current, and only within the passive refresh rules; past them the current token is the answer.
      const outcome = await app.tokens.refreshReported(appid, secret, token.accessToken, ctx)
      if (outcome.token) token = outcome.token
      else if (outcome.notice) throw outcome.notice
    }
    await handOut(token, officialSubject(appid))
    app.finish(request, reply, 200, STABLE_TOKEN_PATH)
    return answer(token)
  })

  app.get(WECOM_TOKEN_PATH, {
    schema: {
      summary: 'WeCom\'s GET /cgi-bin/gettoken, answered from the cache',
      operationId: 'wecomGettoken',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      querystring: WecomTokenQuerySchema,
      response: { 200: Type.Union([WecomTokenSchema, WechatErrorSchema]) }
    },
    config: { appField: 'corpid' },
    errorHandler: refuse(WECOM),
    onRequest: app.limits.perCaller,
    preHandler: app.limits.perApp
  }, (request, reply) => {
    const { corpid, corpsecret } = request.query
    const kept = app.wecomTokens.fromHot(corpid, corpsecret)
    const subject = (): string => app.wecomTokens.credential.subject(app.wecomTokens.admit(corpid, corpsecret).owner)
    if (kept && handedOut.known(kept, subject())) {
      app.sendJson(request, reply, WECOM_TOKEN_PATH, wecomAnswerJson(kept))
      return
    }
    return (kept ? Promise.resolve(kept) : app.wecomTokens.afterHotMiss(corpid, corpsecret, context(request, corpid)))
      .then(async (token) => await handOut(token, subject()))
      .then((token) => {
        app.finish(request, reply, 200, WECOM_TOKEN_PATH)
        return { errcode: 0, errmsg: 'ok', ...answer(token) }
      })
  })

  /** The owner a token was handed out for, while it is still that owner's token in the store (else the SDK's refusal). */
  async function currentOwner (token: string, ownerOf: (subject: string) => string | undefined): Promise<string> {
    const subject = await handedOut.subjectOf(token)
    const owner = subject === undefined ? undefined : ownerOf(subject)
    const entry = owner === undefined ? null : await app.store.get(owner)
    if (owner === undefined || entry === null || entry.accessToken !== token) throw notCurrent()
    return owner
  }

  /** The authorizer a token was handed out for, while it is that authorizer's current token; undefined for another kind's. */
  async function authorizerOfToken (token: string): Promise<{ componentAppId: string, authorizerAppId: string } | undefined> {
    const subject = await handedOut.subjectOf(token)
    const space = subject === undefined ? undefined : app.authorizerTokens.credential.ownerOf(subject)
    if (space === undefined) return undefined
    await currentOwner(token, () => space)
    return parseAuthorizerSpace(space)
  }

  const ticketAnswer = (ticket: ServedToken) => ({ errcode: 0, errmsg: 'ok', ticket: ticket.accessToken, expires_in: ticket.expiresIn })

  app.get(TICKET_PATH, {
    schema: {
      summary: 'WeChat\'s GET /cgi-bin/ticket/getticket, answered from the cache',
      operationId: 'wechatGetticket',
      tags: ['wechat-api'],
      security: CallerKeySecurity,
      description: 'For an access token this service handed out on /cgi-bin/token or /cgi-bin/stable_token, while it is the app\'s current one.',
      querystring: TicketQuerySchema,
      response: { 200: Type.Union([WechatTicketSchema, WechatErrorSchema]) }
    },
    errorHandler: refuse(TICKETS),
    onRequest: app.limits.perCaller
  }, async (request, reply) => {
    const { access_token: token, type = 'jsapi' } = request.query
    // An Open Platform authorizer's token (handed out on api_authorizer_token or api_query_auth): its own tickets.
    const authorizer = components === undefined ? undefined : await authorizerOfToken(token)
    if (authorizer !== undefined) {
      const { componentAppId, authorizerAppId } = authorizer
      const ticket = app.authorizerTickets.fromHot(componentAppId, authorizerAppId, type) ??
        await app.authorizerTickets.afterHotMiss(componentAppId, authorizerAppId, type, context(request, componentAppId))
      app.finish(request, reply, 200, TICKET_PATH)
      return ticketAnswer(ticket)
    }
    const appId = await currentOwner(token, (subject) => app.tokens.credential.ownerOf(subject))
    const ctx = context(request, appId)
    const secret = app.tokens.configuredSecret(appId)
    let ticket: ServedToken
    if (secret !== undefined) {
      ticket = await app.tickets.getTicket(appId, secret, type, ctx)
    } else if (configured) {
      // Its token is still in the store (handed out under an earlier WECHAT_APPS), but the app is no longer served.
      throw new AppError('APP_NOT_CONFIGURED', `appId ${appId} is not one of the configured WECHAT_APPS`)
    } else {
      const entry = await app.store.get(appId)
      if (entry === null) throw new AppError('STORE_UNAVAILABLE', 'The app\'s token left the store meanwhile')
      // Without the secret the token cannot be replaced here: once WeChat refused it, each call made with it would
      // spend a getticket call of the app's daily budget on the same refusal, for every SDK that asks again.
      if (await handedOut.refused(token)) throw refusedByWechat()
      try {
        ticket = await app.tickets.forCurrentToken(appId, entry.secretFingerprint, token, type, ctx)
      } catch (err) {
        if (err instanceof WechatApiError && err.tokenRefused) await handedOut.rememberRefused(token, entry.expiresAt).catch(() => {})
        throw err
      }
    }
    app.finish(request, reply, 200, TICKET_PATH)
    return ticketAnswer(ticket)
  })

  for (const [path, type, querystring] of [
    [WECOM_CORP_TICKET_PATH, 'corp', WecomCorpTicketQuerySchema],
    [WECOM_AGENT_TICKET_PATH, 'agent', WecomAgentTicketQuerySchema]
  ] as const) {
    app.get(path, {
      schema: {
        summary: `WeCom's GET ${path}${type === 'agent' ? '?type=agent_config' : ''}, answered from the cache`,
        operationId: type === 'corp' ? 'wecomGetJsapiTicket' : 'wecomAgentConfigTicket',
        tags: ['wechat-api'],
        security: CallerKeySecurity,
        description: 'For a WeCom access token this service handed out on /cgi-bin/gettoken, while it is the application\'s current one.',
        querystring,
        response: { 200: Type.Union([WechatTicketSchema, WechatErrorSchema]) }
      },
      errorHandler: refuse(WECOM_TICKETS),
      onRequest: app.limits.perCaller
    }, async (request, reply) => {
      const owner = await currentOwner(request.query.access_token, (subject) => app.wecomTokens.credential.ownerOf(subject))
      const application = app.wecomTokens.applicationByOwner(owner)
      if (application === undefined) throw notCurrent()
      const ticket = await app.wecomTickets.afterHotMiss(application.corpId, application.secret, type, undefined, context(request, application.corpId))
      app.finish(request, reply, 200, path)
      return ticketAnswer(ticket)
    })
  }
}

export default wechatApiRoutes
