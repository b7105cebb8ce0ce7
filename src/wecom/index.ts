/**
 * WeCom (企业微信): the access token of each application of WECOM_APPS, from WECOM_API_BASE (or, with "mock", the
 * built-in stand-in, which then knows the configured applications). Without WECOM_APPS nothing is served: the route
 * answers APP_NOT_CONFIGURED. Two plugins, as for every product: the service, decorated on the root instance, and its
 * routes, registered in the /api scope.
 */
import fp from 'fastify-plugin'
import { loadWecomApps } from '../config.js'
import type { ProductOptions } from '../official-account/index.js'
import { scheduleRefreshes } from '../official-account/scheduler.js'
import { MockWecom } from '../stand-in/wecom.js'
import { clientOptions } from '../plugins/wechat.js'
import { createWechatClient, type WechatClient } from '../wechat/client.js'
import { createWecomTicketService, type WecomTicketService } from './ticket-service.js'
import { createWecomTokenService, type WecomServiceOptions, type WecomTokenService } from './token-service.js'

export { default as wecomRoutes } from './routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    wecomTokens: WecomTokenService
    wecomTickets: WecomTicketService
    /** The WeCom API client (its base is where passed-through WeCom calls go). */
    wecomClient: WechatClient
  }
}

export const wecom = fp<ProductOptions>(async (app, { config, metrics, now }) => {
  const apps = loadWecomApps(config) ?? new Map<string, Map<string, string>>()
  let baseUrl = config.WECOM_API_BASE
  if (baseUrl === 'mock') {
    const corps = Object.fromEntries([...apps].map(([corpId, agents]) => [corpId, Object.fromEntries(agents)]))
    const mock = new MockWecom({ corps })
    baseUrl = await mock.start()
    app.log.warn({ upstream: baseUrl }, 'WECOM_API_BASE=mock: WeCom tokens come from the built-in WeCom stand-in, not from WeCom')
    app.addHook('onClose', async () => { await mock.close() })
  }
  const client = createWechatClient({ baseUrl, mode: 'stable', ...clientOptions(config, metrics, now) })
  app.addHook('onClose', async () => { await client.close() })
  app.decorate('wecomClient', client)
  const shared: WecomServiceOptions = {
    store: app.store,
    wecom: client,
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    lockLeaseMs: config.LOCK_LEASE_MS,
    negativeCacheSeconds: config.NEGATIVE_CACHE_SECONDS,
    hotCacheMs: config.HOT_CACHE_MS,
    hotCacheMaxApps: config.HOT_CACHE_MAX_APPS,
    fingerprintKey: config.FINGERPRINT_KEY,
    metrics,
    ...(now ? { now } : {})
  }
  app.decorate('wecomTokens', createWecomTokenService({
    ...shared,
    apps,
    dailyBudget: config.WECOM_DAILY_BUDGET,
    serveMarginSeconds: config.TOKEN_SERVE_MARGIN_SECONDS
  }))
  app.decorate('wecomTickets', createWecomTicketService({
    ...shared,
    tokens: app.wecomTokens,
    corpHourlyBudget: config.WECOM_CORP_TICKET_HOURLY_BUDGET,
    agentHourlyBudget: config.WECOM_AGENT_TICKET_HOURLY_BUDGET
  }))
  metrics.observeApps(function * () {
    for (const [owner, expiresAt] of app.wecomTokens.known()) yield [owner, 'wecom_token', expiresAt] as const
    yield * app.wecomTickets.known()
  })
  // Registered after the client's: runs before it (onClose hooks run last-registered first); tickets before tokens.
  app.addHook('onClose', async () => { await app.wecomTokens.close() })
  app.addHook('onClose', async () => { await app.wecomTickets.close() })
  scheduleRefreshes(app, {
    tokens: app.wecomTokens,
    appIds: app.wecomTokens.owners(),
    intervalSeconds: config.SCHEDULER_INTERVAL_SECONDS,
    component: 'wecom-scheduler',
    leader: 'wecom-leader'
  })
}, { name: 'wecom', fastify: '5.x', dependencies: ['store'], decorators: { fastify: ['store'] } })
