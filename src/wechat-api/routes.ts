/**
 * WeChat's own token endpoints, answered from the cache in WeChat's own shapes, so that a WeChat SDK pointed at this
 * service (its API host changed) gets the one shared token of each app, with every guarantee of the GenAuth routes:
 * `GET /cgi-bin/token` and `POST /cgi-bin/stable_token` (Official Accounts and Mini Programs), and WeCom's
 * `GET /cgi-bin/gettoken`. Errors are `{"errcode","errmsg"}` with HTTP 200, as WeChat answers (src/wechat-api/errors.ts).
 */
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { context } from '../request-context.js'
import { APP_ID_PATTERN, APP_SECRET_PATTERN } from '../schemas/token.js'
import type { ServedToken } from '../tokens/rules.js'
import { WecomTokenRequestSchema } from '../wecom/routes.js'
import { wechatShaped, type Dialect } from './errors.js'

export const TOKEN_PATH = '/cgi-bin/token'
export const STABLE_TOKEN_PATH = '/cgi-bin/stable_token'
export const WECOM_TOKEN_PATH = '/cgi-bin/gettoken'

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

/** WeChat's answer: the token and its whole seconds left (what WeChat's expires_in is for a token it gave earlier). */
const answer = (token: ServedToken) => ({ access_token: token.accessToken, expires_in: token.expiresIn })

const wechatApiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  /** Every refusal, in WeChat's shape (HTTP 200), counted under the apiCode's statusCode. */
  function refuse (dialect: Dialect) {
    return (err: unknown, request: FastifyRequest, reply: FastifyReply) => {
      const { body, error } = wechatShaped(err, dialect)
      if (error.statusCode >= 500) request.log.error({ err: error.cause ?? error, apiCode: error.apiCode }, 'WeChat-shaped endpoint failed')
      app.finish(request, reply, error.statusCode, request.routeOptions.url)
      if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds))
      reply.code(200).send(body)
    }
  }
  const response = { 200: Type.Union([WechatTokenSchema, WechatErrorSchema]) }

  app.get(TOKEN_PATH, {
    schema: {
      summary: 'WeChat\'s GET /cgi-bin/token, answered from the cache',
      operationId: 'wechatToken',
      tags: ['wechat-api'],
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
    if (kept) {
      app.finish(request, reply, 200, TOKEN_PATH)
      reply.send(answer(kept))
      return
    }
    return app.tokens.afterHotMiss(appid, secret, context(request, appid)).then((token) => {
      app.finish(request, reply, 200, TOKEN_PATH)
      return answer(token)
    })
  })

  app.post(STABLE_TOKEN_PATH, {
    schema: {
      summary: 'WeChat\'s POST /cgi-bin/stable_token, answered from the cache',
      operationId: 'wechatStableToken',
      tags: ['wechat-api'],
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
    app.finish(request, reply, 200, STABLE_TOKEN_PATH)
    return answer(token)
  })

  app.get(WECOM_TOKEN_PATH, {
    schema: {
      summary: 'WeCom\'s GET /cgi-bin/gettoken, answered from the cache',
      operationId: 'wecomGettoken',
      tags: ['wechat-api'],
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
    if (kept) {
      app.finish(request, reply, 200, WECOM_TOKEN_PATH)
      reply.send({ errcode: 0, errmsg: 'ok', ...answer(kept) })
      return
    }
    return app.wecomTokens.afterHotMiss(corpid, corpsecret, context(request, corpid)).then((token) => {
      app.finish(request, reply, 200, WECOM_TOKEN_PATH)
      return { errcode: 0, errmsg: 'ok', ...answer(token) }
    })
  })
}

export default wechatApiRoutes
