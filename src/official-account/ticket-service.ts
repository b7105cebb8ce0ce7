/**
 * JS-SDK and card tickets: each type a credential of the app, kept by the same lifecycle as the access token (store
 * and hot cache, one fetch per herd over every instance, refresh ahead, served while it lasts when a refresh fails,
 * a daily budget, remembered refusals), fetched with the app's token by the refresh-once rule. The caller's appSecret
 * is checked as for a token, and before any ticket is fetched: a wrong secret never takes a ticket's lock.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Metrics } from '../metrics.js'
import type { TokenStore } from '../store/types.js'
import { normalized, OUTAGE_COPIES, type CallContext, type ServedToken, type TokenService } from './token-service.js'
import { ticketCredential, type TicketType } from '../tokens/credential.js'
import { configuredOnly, createGuards } from '../tokens/guards.js'
import { createLifecycle, type Lifecycle, type Source } from '../tokens/lifecycle.js'
import { createTokenCaller } from '../tokens/with-token.js'
import type { WechatClient } from '../wechat/client.js'
import { jssdkSignature, nonce } from '../wechat/jssdk.js'

export { jssdkSignature } from '../wechat/jssdk.js'

export interface TicketServiceOptions {
  tokens: TokenService
  store: TokenStore
  wechat: WechatClient
  /** Upstream getticket calls per app per ticket type per day (Beijing time). */
  dailyBudget: number
  serveMarginSeconds: number
  refreshAheadSeconds: number
  requestDeadlineMs: number
  lockLeaseMs: number
  negativeCacheSeconds: number
  hotCacheMs?: number
  hotCacheMaxApps?: number
  /** WECHAT_APPS: the apps whose tickets the scheduler keeps fresh (those that ever fetched one). */
  apps?: ReadonlyMap<string, string>
  metrics?: Metrics
  now?: () => number
}

/** What wx.config needs: the signature of a page url, with the timestamp and nonce it was made with. */
export interface JssdkSignature {
  appId: string
  timestamp: number
  nonceStr: string
  signature: string
}

export function createTicketService (opts: TicketServiceOptions) {
  const { tokens, wechat } = opts
  const now = opts.now ?? Date.now
  const withToken = createTokenCaller(tokens, now)
  // Tickets are fetched for a secret the token proved (verified): their guards are the budgets, backoffs and refusals.
  const guards = createGuards(opts.store, configuredOnly(opts.negativeCacheSeconds, now, opts.metrics))
  const lifecycles: Record<TicketType, Lifecycle> = { jsapi: lifecycleOf('jsapi'), wx_card: lifecycleOf('wx_card') }

  function lifecycleOf (type: TicketType): Lifecycle {
    return createLifecycle({
      credential: ticketCredential(type, opts.dailyBudget),
      madeWith: tokens.credential,
      store: opts.store,
      guards,
      marginMs: opts.serveMarginSeconds * 1000,
      aheadMs: opts.refreshAheadSeconds * 1000,
      requestDeadlineMs: opts.requestDeadlineMs,
      lockLeaseMs: opts.lockLeaseMs,
      hotMs: opts.hotCacheMs ?? 0,
      hotMax: opts.hotCacheMaxApps ?? 10_000,
      copiesMax: OUTAGE_COPIES,
      metrics: opts.metrics,
      now
    })
  }

  function sourceFor (appId: string, secret: string, type: TicketType, ctx: CallContext): Source {
    return {
      // The secret is checked (and the token made ready) before the ticket's lock is taken: getToken answers or throws.
      async verified () {
        await tokens.getToken(appId, secret, ctx)
        return true
      },
      fetch: (deadline) => async (control) =>
        await withToken(appId, secret, ctx, async (accessToken) => await wechat.fetchTicket(accessToken, type, { ...control, deadline }))
    }
  }

  /** The hot-cache answer, synchronously, when there is one for this appId, secret and type. */
  function fromHot (appId: string, secret: string, type: TicketType): ServedToken | undefined {
    return lifecycles[type].fromHot(appId, secret)
  }

  /**
   * The app's ticket of this type, if appSecret is the right one, for a caller that looked in the hot cache already
   * under the appId as sent (the routes): looked in again only under another spelling.
   */
  async function afterHotMiss (anyAppId: string, secret: string, type: TicketType, ctx: CallContext): Promise<ServedToken> {
    const appId = normalized(anyAppId)
    const fp = tokens.admit(appId, secret)
    // One deadline for the request: the token, getticket, a replaced token and the second getticket all within it.
    const scoped = { ...ctx, deadline: ctx.deadline ?? now() + opts.requestDeadlineMs }
    const lifecycle = lifecycles[type]
    const source = sourceFor(appId, secret, type, scoped)
    return appId === anyAppId
      ? await lifecycle.afterHotMiss(appId, secret, fp, source, scoped)
      : await lifecycle.get(appId, secret, fp, source, scoped)
  }

  /** The app's ticket of this type, if appSecret is the right one. */
  async function getTicket (anyAppId: string, secret: string, type: TicketType, ctx: CallContext): Promise<ServedToken> {
    return fromHot(anyAppId, secret, type) ?? await afterHotMiss(anyAppId, secret, type, ctx)
  }

  /**
   * The app's ticket of this type for a caller that proved nothing but the app's current access token (WeChat's own
   * getticket, in dynamic mode, where the secret is not known here): served from the cache, or fetched with that
   * token (no replacement of it: that takes the secret). `fp` is the fingerprint of the secret of that token's entry.
   */
  async function forCurrentToken (appId: string, fp: string, accessToken: string, type: TicketType, ctx: CallContext): Promise<ServedToken> {
    const scoped = { ...ctx, deadline: ctx.deadline ?? now() + opts.requestDeadlineMs }
    return await lifecycles[type].get(appId, fp, fp, {
      verified: async () => true,
      fetch: (deadline) => async (control) => await wechat.fetchTicket(accessToken, type, { ...control, deadline })
    }, scoped)
  }

  /** The wx.config fields for a page url (an absolute http(s) url; its #fragment is ignored), past the hot cache. */
  async function signature (anyAppId: string, secret: string, url: string, ctx: CallContext): Promise<JssdkSignature> {
    const ticket = await afterHotMiss(anyAppId, secret, 'jsapi', ctx)
    return signed(normalized(anyAppId), ticket, url)
  }

  /** Signs a url with a ticket in hand (the hot path of the signature route). */
  function signed (appId: string, ticket: ServedToken, url: string): JssdkSignature {
    const timestamp = Math.floor(now() / 1000)
    const nonceStr = nonce()
    return { appId, timestamp, nonceStr, signature: jssdkSignature(ticket.accessToken, nonceStr, timestamp, url) }
  }

  /** For the scheduler: refresh the tickets of a configured app that are due (only those it ever fetched). */
  async function refreshIfDue (appId: string, log: FastifyBaseLogger): Promise<void> {
    const secret = opts.apps?.get(appId)
    if (secret === undefined) return
    const fp = tokens.admit(appId, secret)
    const ctx = { log, origin: 'background' }
    for (const type of ['jsapi', 'wx_card'] as const) {
      await lifecycles[type].refreshIfDue(appId, fp, sourceFor(appId, secret, type, ctx), false, log)
    }
  }

  /** Each app and ticket type this instance has served, with the ticket's expiry (for the seconds-left gauge). */
  function known (): Array<[string, string, number]> {
    return Object.values(lifecycles).flatMap((lifecycle) =>
      lifecycle.known().map(([appId, expiresAt]): [string, string, number] => [appId, lifecycle.credential.name, expiresAt]))
  }

  async function close (): Promise<void> {
    await Promise.all(Object.values(lifecycles).map(async (lifecycle) => { await lifecycle.close() }))
  }

  return { fromHot, getTicket, afterHotMiss, forCurrentToken, signature, signed, refreshIfDue, known, close }
}

export type TicketService = ReturnType<typeof createTicketService>
