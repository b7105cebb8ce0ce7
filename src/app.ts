/** The app factory: builds the service from a config object. Tests build it here; server.ts runs it. */
import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Logger } from 'pino'
import { loadApps, loadCallerKeys, loadComponents, loadWecomApps, type Config } from './config.js'
import { limitConnections } from './connection-limit.js'
import { createLogger, requestLoggerFactory } from './logger.js'
import { createMetrics, type Metrics } from './metrics.js'
import { buildMetricsServer } from './metrics-server.js'
import auth from './plugins/auth.js'
import docs from './plugins/docs.js'
import envelope, { answerOutsideRoutes, clientErrorHandler, frameworkErrorHandler, requestIdFrom } from './plugins/envelope.js'
import rateLimits from './plugins/rate-limit.js'
import storePlugin from './plugins/store.js'
import wechatPlugin from './plugins/wechat.js'
import healthRoutes from './routes/health.js'
import metricsRoute from './routes/metrics.js'
import { miniProgram, miniProgramRoutes } from './mini-program/index.js'
import { officialAccount, officialAccountRoutes } from './official-account/index.js'
import wechatApiRoutes from './wechat-api/routes.js'
import { wecom, wecomRoutes } from './wecom/index.js'
import { VERSION } from './version.js'
import { authorizerTicketRoutes, componentCallback, openPlatform, openPlatformRoutes } from './open-platform/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
    /** The listener of GET /metrics when METRICS_PORT gives it one of its own (listening once the app is ready), else null. */
    metricsServer: FastifyInstance | null
  }
}

export interface BuildOptions {
  logger?: Logger
  /** The clock, for tests that move time. */
  now?: () => number
}

/**
 * Node checks the request and headers timeouts of every connection on an interval, 30 s by default, so a slow request
 * could outlive its timeout by that much. A tenth of the timeout, at most a second, cuts it off within 10 % of it.
 */
function timeoutCheckInterval (timeoutMs: number): number {
  return Math.min(1000, Math.max(10, Math.floor(timeoutMs / 10)))
}

export async function buildApp (config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const now = options.now
  const logger: FastifyBaseLogger = options.logger ?? createLogger(config.LOG_LEVEL)
  const metrics = createMetrics({ maxApps: config.METRICS_MAX_APPS })
  metrics.describe({
    version: VERSION,
    serveMarginSeconds: config.TOKEN_SERVE_MARGIN_SECONDS,
    budgets: {
      access_token: config.DAILY_UPSTREAM_BUDGET,
      jsapi_ticket: config.TICKET_DAILY_BUDGET,
      wx_card_ticket: config.TICKET_DAILY_BUDGET,
      code2session: config.SESSION_DAILY_BUDGET,
      wecom_token: config.WECOM_DAILY_BUDGET,
      component_token: config.COMPONENT_DAILY_BUDGET,
      authorizer_jsapi_ticket: config.TICKET_DAILY_BUDGET,
      authorizer_wx_card_ticket: config.TICKET_DAILY_BUDGET
    },
    configuredApps: (loadApps(config)?.size ?? 0) + [...loadWecomApps(config)?.values() ?? []].reduce((sum, agents) => sum + agents.size, 0),
    tokenEndpoint: config.WECHAT_TOKEN_MODE === 'classic' ? 'token' : 'stable_token'
  })
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLoggerFactory,
    bodyLimit: config.BODY_LIMIT_BYTES,
    requestIdHeader: false,
    genReqId: (req) => requestIdFrom(req.headers['x-request-id'], randomUUID),
    ajv: { customOptions: { coerceTypes: false, allErrors: false } },
    // While closing, a request that still arrives on a kept-alive connection is answered as usual, with Connection:
    // close (see finish): Redis and the upstream pool close only after the last connection ends, and Fastify's own
    // 503 would be the one answer without the envelope.
    return503OnClosing: false,
    clientErrorHandler: clientErrorHandler(logger, metrics),
    frameworkErrors: frameworkErrorHandler(logger, metrics),
    // The whole request, headers included, must arrive within REQUEST_TIMEOUT_MS: Fastify sets the server's
    // requestTimeout from its own option; the headers timeout and the check interval go to http.createServer.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      // A request without Host is served (the service has one name); Node would refuse it with a bare 400.
      requireHostHeader: false,
      headersTimeout: config.REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: timeoutCheckInterval(config.REQUEST_TIMEOUT_MS)
    }
  }).withTypeProvider<TypeBoxTypeProvider>()
  limitConnections(app.server, { max: config.MAX_CONNECTIONS, graceMs: config.CONNECTION_GRACE_MS, log: logger, metrics, listener: 'main' })
  answerOutsideRoutes(app.server, metrics)
  // Bodies are JSON only, any other type being apiCode 1004; Fastify parses text/plain too unless told not to.
  app.removeContentTypeParser('text/plain')

  app.decorate('metrics', metrics)

  // Answers are written directly unless a hook may set headers first: the rate limits' hook (configured to add no
  // x-ratelimit-* header to an answered request, but a header it added would be lost on the direct path).
  await app.register(envelope, { metrics, logLevel: config.LOG_LEVEL, direct: config.RATE_LIMIT_PER_CALLER === 0 && config.RATE_LIMIT_PER_APP === 0 })
  await app.register(storePlugin, { config, ...(now ? { now } : {}) })
  await app.register(wechatPlugin, { config, metrics, ...(now ? { now } : {}) })
  await app.register(officialAccount, { config, metrics, now })
  await app.register(miniProgram, { config, metrics, now })
  await app.register(wecom, { config, metrics, now })
  await app.register(openPlatform, { config, metrics, now })
  metrics.observeStore(app.store)
  await app.register(docs, { enabled: config.DOCS_ENABLED })
  await app.register(healthRoutes)
  // WeChat's pushes to the components: no caller key (WeChat has none), each push checked by its signature instead.
  if (loadComponents(config) !== undefined) await app.register(componentCallback, { config, now })
  if (config.METRICS_PORT === undefined) {
    await app.register(metricsRoute, { metrics, key: config.METRICS_KEY, scrapesPerSecond: config.METRICS_SCRAPES_PER_SECOND })
    app.decorate('metricsServer', null)
  } else {
    const metricsServer = await buildMetricsServer(config, logger, metrics)
    const port = config.METRICS_PORT
    app.decorate('metricsServer', metricsServer)
    app.addHook('onReady', async () => { await metricsServer.listen({ port, host: config.METRICS_HOST ?? config.HOST }) })
    app.addHook('onClose', async () => { await metricsServer.close() })
  }
  // The /api routes in a scope of their own, whose hooks run for these routes only, on whatever spelling of a path
  // the router matched to them: first the caller key check, then (as route hooks) the rate limits, which key by its caller.
  await app.register(async (api) => {
    await api.register(auth, { keys: loadCallerKeys(config) })
    await api.register(rateLimits, { config })
    await api.register(officialAccountRoutes)
    await api.register(miniProgramRoutes)
    await api.register(wecomRoutes)
    const components = { open: loadCallerKeys(config).length > 0 || config.COMPONENT_ROUTES_WITHOUT_KEYS }
    await api.register(openPlatformRoutes, components)
    await api.register(authorizerTicketRoutes, components)
    // WeChat's own paths (/cgi-bin/…), which no other route uses: behind the same caller keys and rate limits.
    if (config.WECHAT_COMPAT_API) {
      await api.register(wechatApiRoutes, {
        fingerprintKey: config.FINGERPRINT_KEY,
        configured: loadApps(config) !== undefined,
        components: loadComponents(config),
        now,
        passthrough: config.WECHAT_PASSTHROUGH
          ? {
              metrics,
              bodyLimitBytes: config.WECHAT_PASSTHROUGH_BODY_LIMIT_BYTES,
              timeoutMs: config.WECHAT_PASSTHROUGH_TIMEOUT_MS,
              connections: config.WECHAT_PASSTHROUGH_CONNECTIONS,
              connectTimeoutMs: config.WECHAT_CONNECT_TIMEOUT_MS,
              components: loadComponents(config) !== undefined,
              now
            }
          : undefined
      })
    }
  })
  return app
}
