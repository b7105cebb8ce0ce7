/**
 * Open Platform third-party platforms (components) of WECHAT_COMPONENTS: the verify tickets WeChat pushes, received on
 * the callback; each component's component_access_token on the shared engine. Three plugins, as for every product:
 * the services, decorated on the root instance; the callback, on the root (WeChat calls it, with no caller key); and
 * the routes, registered in the /api scope.
 */
import fp from 'fastify-plugin'
import type { FastifyError, FastifyPluginAsync } from 'fastify'
import { loadComponents } from '../config.js'
import type { ProductOptions } from '../official-account/index.js'
import { scheduleRefreshes } from '../official-account/scheduler.js'
import { ticketSettings } from '../tokens/tickets.js'
import { createAuthorizerTicketService, type AuthorizerTicketService } from './authorizer-ticket-service.js'
import { createAuthorizerTokenService, type AuthorizerTokenService } from './authorizer-token-service.js'
import type { ComponentKindOptions } from './component-kind.js'
import { createComponentTokenService, type ComponentTokenService } from './component-token-service.js'
import { componentCrypto, type ComponentCrypto } from './msg-crypto.js'
import { MAX_PUSH_BYTES, PushError, checkPush, type PushQuery } from './push.js'
import { createRefreshTokens } from './refresh-tokens.js'
import { TICKET_LIFE_MS, componentSpace, createVerifyTickets, type VerifyTickets } from './verify-tickets.js'

export { default as openPlatformRoutes } from './routes.js'
export { default as authorizerTicketRoutes } from './ticket-routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    componentTokens: ComponentTokenService
    authorizerTokens: AuthorizerTokenService
    authorizerTickets: AuthorizerTicketService
    verifyTickets: VerifyTickets
  }
}

export const openPlatform = fp<ProductOptions>(async (app, { config, metrics, now }) => {
  const components = loadComponents(config) ?? new Map()
  const clock = now ? { now } : {}
  app.decorate('verifyTickets', createVerifyTickets({
    store: app.store,
    wechat: app.wechat,
    secrets: new Map([...components].map(([appId, component]) => [appId, component.appSecret])),
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    log: app.log.child({ component: 'open-platform' }),
    ...clock
  }))
  /** What the component's and its authorizers' token services share. */
  const kind: ComponentKindOptions = {
    store: app.store,
    wechat: app.wechat,
    components,
    dailyBudget: config.COMPONENT_DAILY_BUDGET,
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    lockLeaseMs: config.LOCK_LEASE_MS,
    negativeCacheSeconds: config.NEGATIVE_CACHE_SECONDS,
    refreshAheadSeconds: config.REFRESH_AHEAD_SECONDS,
    serveMarginSeconds: config.TOKEN_SERVE_MARGIN_SECONDS,
    hotCacheMs: config.HOT_CACHE_MS,
    hotCacheMaxApps: config.HOT_CACHE_MAX_APPS,
    fingerprintKey: config.FINGERPRINT_KEY,
    metrics,
    ...clock
  }
  app.decorate('componentTokens', createComponentTokenService({ ...kind, tickets: app.verifyTickets }))
  app.decorate('authorizerTokens', createAuthorizerTokenService({
    ...kind,
    componentTokens: app.componentTokens,
    refreshTokens: createRefreshTokens({
      store: app.store,
      listSpacingMs: config.AUTHORIZER_LIST_SPACING_SECONDS * 1000,
      lockLeaseMs: config.LOCK_LEASE_MS,
      log: app.log.child({ component: 'open-platform' }),
      metrics,
      ...clock
    })
  }))
  app.decorate('authorizerTickets', createAuthorizerTicketService({
    authorizerTokens: app.authorizerTokens,
    components,
    store: app.store,
    wechat: app.wechat,
    ...ticketSettings(config),
    metrics,
    ...clock
  }))
  metrics.observeApps(function * () {
    for (const [owner, expiresAt] of app.componentTokens.known()) yield [owner, 'component_token', expiresAt] as const
    for (const [owner, expiresAt] of app.authorizerTokens.known()) yield [owner, 'authorizer_token', expiresAt] as const
  }, () => app.authorizerTickets.known())
  metrics.observeComponentTickets(function * () {
    for (const appId of components.keys()) {
      const held = app.verifyTickets.held(appId)
      yield [appId, held === undefined ? undefined : held.createdAt] as const
    }
  })
  app.addHook('onClose', async () => {
    await app.authorizerTickets.close()
    await app.authorizerTokens.close()
    await app.componentTokens.close()
  })
  scheduleRefreshes(app, {
    tokens: app.componentTokens,
    appIds: app.componentTokens.owners(),
    intervalSeconds: config.SCHEDULER_INTERVAL_SECONDS,
    component: 'component-scheduler',
    leader: 'component-leader'
  })
  if (components.size > 0) {
    scheduleRefreshes(app, {
      tokens: app.authorizerTokens,
      appIds: app.authorizerTokens.owners,
      intervalSeconds: config.SCHEDULER_INTERVAL_SECONDS,
      component: 'authorizer-scheduler',
      leader: 'authorizer-leader'
    })
  }
}, { name: 'open-platform', fastify: '5.x', dependencies: ['store', 'wechat'] })

export const COMPONENT_EVENTS_ROUTE = '/wechat/components/:componentAppId/events'
/** How long a push is remembered as taken: well past the 5 minutes its timestamp is accepted, and WeChat's resends. */
const REPLAY_MEMORY_MS = 3600_000

/**
 * WeChat's pushes to a component: POST /wechat/components/{componentAppId}/events, the URL entered in WeChat's
 * console. Every push is checked (signature, freshness, decryption with the current or the previous EncodingAESKey,
 * the component's appId) before anything is done; a good one is answered `success`, as WeChat wants, and one seen
 * before (WeChat sends a push again until it gets `success`) is answered `success` without being acted on twice.
 * Anything else is answered 400 with the reason, never a 5xx; nothing of the body is logged.
 */
export const componentCallback: FastifyPluginAsync<{ config: ProductOptions['config'], now?: (() => number) | undefined }> = async (app, { config, now: clock }) => {
  const now = clock ?? Date.now
  const cryptos = new Map<string, ComponentCrypto>()
  for (const [appId, component] of loadComponents(config) ?? new Map()) cryptos.set(appId, componentCrypto(component))
  // The body is WeChat's XML (text/xml), read as it came, whatever type it is sent with: push.ts reads it defensively.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_PUSH_BYTES }, (_request, body, done) => { done(null, body) })
  // Refusals before the handler (a body over the cap, one cut off) in the callback's own words: plain text, never the
  // service's envelope, never a 5xx for what the caller sent.
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500
    const reason = status === 413 ? 'too-large' : status < 500 ? 'bad-request' : 'internal'
    if (status >= 500) request.log.error({ err }, 'the component callback failed')
    else app.metrics.componentPushes.labels('refused', reason).inc()
    app.metrics.countRequest(COMPONENT_EVENTS_ROUTE, status)
    return reply.code(status).header('content-type', 'text/plain; charset=utf-8').header('x-request-id', request.id)
      .send(status === 413 ? `The push is refused: the body is larger than ${MAX_PUSH_BYTES} bytes` : status < 500 ? 'The push is refused' : 'error')
  })

  app.post<{ Params: { componentAppId: string }, Querystring: PushQuery, Body: Buffer | undefined }>(COMPONENT_EVENTS_ROUTE, {
    schema: { hide: true },
    bodyLimit: MAX_PUSH_BYTES
  }, async (request, reply) => {
    const { componentAppId } = request.params
    const component = cryptos.get(componentAppId)
    const answer = (status: number, text: string) => {
      app.metrics.countRequest(COMPONENT_EVENTS_ROUTE, status)
      return reply.code(status).header('content-type', 'text/plain; charset=utf-8').header('x-request-id', request.id).send(text)
    }
    if (component === undefined) return answer(404, 'unknown component')
    let checked
    try {
      checked = checkPush({ query: request.query, body: request.body ?? Buffer.alloc(0), component, now: now() })
    } catch (err) {
      if (!(err instanceof PushError)) throw err
      app.metrics.componentPushes.labels('refused', err.reason).inc()
      request.log.warn({ componentAppId, reason: err.reason }, 'a push to the component callback was refused')
      return answer(400, err.message)
    }
    const { event, replayId } = checked
    if (checked.previousKey) {
      app.metrics.componentPushes.labels('previous_key', event.type === 'other' ? 'other' : event.type).inc()
      request.log.info({ componentAppId }, 'a push was decrypted with previousEncodingAESKey: WeChat still uses the old key')
    }
    // Seen before (any instance): WeChat sent it again. Answered as it was, acted on once. The store down: acted on
    // again, which every action here allows (a ticket older than the one kept is not kept).
    const first = await app.store.acquire(componentSpace(componentAppId), `push:${replayId}`, '1', REPLAY_MEMORY_MS).catch(() => true)
    if (!first) {
      app.metrics.componentPushes.labels('replayed', event.type).inc()
      return answer(200, 'success')
    }
    if (event.type === 'component_verify_ticket') {
      const createdAt = Math.min(event.createTime * 1000, now())
      if (createdAt + TICKET_LIFE_MS > now()) {
        await app.verifyTickets.receive(componentAppId, { ticket: event.ticket, createdAt }).catch((err: unknown) => {
          request.log.warn({ componentAppId, err: (err as Error).message }, 'a pushed component_verify_ticket is kept in process only: the store refused it')
        })
      }
    } else if (event.type === 'unauthorized') {
      await app.authorizerTokens.revoke(componentAppId, event.authorizerAppId).catch((err: unknown) => {
        request.log.warn({ componentAppId, authorizerAppId: event.authorizerAppId, err: (err as Error).message }, 'an authorization ended, and the store could not forget its refresh token')
      })
      await app.authorizerTickets.revoke(componentAppId, event.authorizerAppId).catch((err: unknown) => {
        request.log.warn({ componentAppId, authorizerAppId: event.authorizerAppId, err: (err as Error).message }, 'an authorization ended, and the store could not forget its tickets')
      })
      request.log.info({ componentAppId, authorizerAppId: event.authorizerAppId }, 'an authorization ended: its refresh token and token are removed')
    } else if (event.type !== 'other') {
      // Exchanged after the answer: WeChat wants one within 5 seconds, and a code it could not exchange now is recovered
      // later from the authorizer list, as any refresh token missing here.
      const log = request.log
      const { authorizerAppId, authorizationCode } = event
      setImmediate(() => {
        app.authorizerTokens.exchange(componentAppId, authorizationCode, { log, origin: 'background' }, true).catch((err: unknown) => {
          log.warn({ componentAppId, authorizerAppId, apiCode: (err as { apiCode?: number }).apiCode, err: (err as Error).message },
            'the pushed authorization code could not be exchanged: the refresh token will be recovered from the authorizer list when needed')
        })
      })
    }
    app.metrics.componentPushes.labels('accepted', event.type === 'other' ? 'other' : event.type).inc()
    return answer(200, 'success')
  })
}
