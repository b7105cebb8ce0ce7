/** Rate limits per caller and per appId (@fastify/rate-limit, counted in Redis when there is one), answered as GenAuth throttles. */
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyRequest, onRequestHookHandler, preHandlerHookHandler } from 'fastify'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'
import { originOf } from './auth.js'

declare module 'fastify' {
  interface FastifyInstance {
    limits: { perCaller: onRequestHookHandler[], perApp: preHandlerHookHandler[] }
  }
  interface FastifyContextConfig {
    /** The body field that names the app a request is for, in the route's own schema (default appId). */
    appField?: 'appId' | 'extIdpConnidentifier' | 'corpId' | 'appid' | 'corpid' | 'componentAppId' | 'component_appid'
  }
}

/**
 * The app a request is for, from the field the matched route's schema validated (its appId, or the phone route's
 * Mini Program identifier), never from a field the route does not check.
 */
function appKeyOf (request: FastifyRequest): string {
  const field = request.routeOptions.config.appField ?? 'appId'
  // The WeChat-shaped GET endpoints name the app in their query string, which their schema validated as well.
  const fields = (request.body ?? request.query) as Record<string, unknown> | undefined
  const value = fields?.[field]
  if (typeof value !== 'string') return 'app:-'
  if (field === 'appId' || field === 'appid') return `app:${value.toLowerCase()}`
  return field === 'corpId' || field === 'corpid' ? `corp:${value}` : `identifier:${value}`
}

export default fp<{ config: Config }>(async (app, { config }) => {
  const timeWindow = config.RATE_LIMIT_WINDOW_SECONDS * 1000
  if (config.RATE_LIMIT_PER_CALLER === 0 && config.RATE_LIMIT_PER_APP === 0) {
    app.decorate('limits', { perCaller: [], perApp: [] })
    return
  }
  /**
   * One registration per limit: the plugin applies one limit per request and registration. The limit's settings go to
   * the registration and the hook is made with no options: given options, scope.rateLimit() makes a child store whose
   * keys start with the route's method and url, which a hook made outside a route does not have ("undefinedundefined-").
   * Without, a key is the nameSpace and the key generator's value: <prefix>:ratelimit:caller:<name>.
   */
  async function limiter (max: number, keyGenerator: (request: FastifyRequest) => string) {
    let hook: onRequestHookHandler | undefined
    await app.register(async (scope) => {
      await scope.register(rateLimit, {
        global: false,
        max,
        timeWindow,
        keyGenerator,
        ...(app.redis ? { redis: app.redis } : {}),
        nameSpace: `${config.REDIS_KEY_PREFIX}:ratelimit:`,
        skipOnError: true,
        addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
        errorResponseBuilder: (_request, context) => new AppError('RATE_LIMITED',
          `Rate limit exceeded: at most ${context.max} requests per ${config.RATE_LIMIT_WINDOW_SECONDS} s; retry in ${context.after}`)
      })
      hook = scope.rateLimit()
    })
    return hook as onRequestHookHandler
  }
  const perCaller = config.RATE_LIMIT_PER_CALLER > 0
    ? [await limiter(config.RATE_LIMIT_PER_CALLER, (request) => `caller:${originOf(request)}`)]
    : []
  const perApp = config.RATE_LIMIT_PER_APP > 0
    ? [await limiter(config.RATE_LIMIT_PER_APP, appKeyOf) as preHandlerHookHandler]
    : []
  app.decorate('limits', { perCaller, perApp })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['store', 'auth'] })
