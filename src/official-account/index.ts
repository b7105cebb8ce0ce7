/**
 * Official Accounts (and the access tokens of Mini Programs): the access token, the JS-SDK and card tickets made with
 * it, wx.config signatures, and the scheduler that keeps the configured apps' ones fresh. Two plugins: the services,
 * decorated on the root instance for the other products, the scheduler and the metrics; and their routes, registered
 * in the scope of the /api routes (caller keys, rate limits).
 */
import fp from 'fastify-plugin'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { loadApps, type Config } from '../config.js'
import type { Metrics } from '../metrics.js'
import { ticketSettings } from '../tokens/tickets.js'
import { scheduleRefreshes } from './scheduler.js'
import { createTicketService, type TicketService } from './ticket-service.js'
import ticketRoutes from './ticket-routes.js'
import { createTokenService, type TokenService } from './token-service.js'
import tokenRoutes from './token-routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    tokens: TokenService
    tickets: TicketService
  }
}

/** What every product plugin is given. */
export interface ProductOptions {
  config: Config
  metrics: Metrics
  /** The clock, for tests that move time. */
  now?: (() => number) | undefined
}

export const officialAccount = fp<ProductOptions>(async (app, { config, metrics, now }) => {
  const apps = loadApps(config)
  const clock = now ? { now } : {}
  app.decorate('tokens', createTokenService({
    store: app.store,
    wechat: app.wechat,
    serveMarginSeconds: config.TOKEN_SERVE_MARGIN_SECONDS,
    refreshAheadSeconds: config.REFRESH_AHEAD_SECONDS,
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    lockLeaseMs: config.LOCK_LEASE_MS,
    negativeCacheSeconds: config.NEGATIVE_CACHE_SECONDS,
    dailyUpstreamBudget: config.DAILY_UPSTREAM_BUDGET,
    forceRefreshDailyLimit: config.FORCE_REFRESH_DAILY_LIMIT,
    forceRefreshMinIntervalSeconds: config.FORCE_REFRESH_MIN_INTERVAL_SECONDS,
    unverifiedChecksPerApp: config.UNVERIFIED_CHECKS_PER_APP,
    unverifiedChecksPerCaller: config.UNVERIFIED_CHECKS_PER_CALLER,
    unverifiedCheckWindowSeconds: config.UNVERIFIED_CHECK_WINDOW_SECONDS,
    unverifiedDailyBudget: config.UNVERIFIED_DAILY_BUDGET,
    hotCacheMs: config.HOT_CACHE_MS,
    hotCacheMaxApps: config.HOT_CACHE_MAX_APPS,
    fingerprintKey: config.FINGERPRINT_KEY,
    metrics,
    ...(apps ? { apps } : {}),
    ...clock
  }))
  app.decorate('tickets', createTicketService({
    tokens: app.tokens,
    store: app.store,
    wechat: app.wechat,
    ...ticketSettings(config),
    metrics,
    ...(apps ? { apps } : {}),
    ...clock
  }))
  metrics.observeApps(function * () {
    for (const [appId, expiresAt] of app.tokens.known()) yield [appId, 'access_token', expiresAt] as const
  }, () => app.tickets.known())
  // onClose hooks run last-registered first: background refreshes end before the store closes.
  app.addHook('onClose', async () => {
    await app.tickets.close()
    await app.tokens.close()
  })
  scheduleRefreshes(app, {
    tokens: app.tokens,
    tickets: app.tickets,
    appIds: [...apps?.keys() ?? []],
    intervalSeconds: config.SCHEDULER_INTERVAL_SECONDS,
    component: 'scheduler'
  })
}, { name: 'official-account', fastify: '5.x', dependencies: ['store', 'wechat'], decorators: { fastify: ['store', 'wechat'] } })

/** The token, refresh, ticket and signature routes; registered where the caller key check and the rate limits are. */
export const officialAccountRoutes: FastifyPluginAsyncTypebox = async (api) => {
  await api.register(tokenRoutes)
  await api.register(ticketRoutes)
}
