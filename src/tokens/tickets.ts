/**
 * The JS-SDK and card tickets WeChat issues for an access token (an Official Account's, an authorizer's of an Open
 * Platform component): each type a credential on the shared lifecycle (store and hot cache, one fetch per herd over
 * every instance, refresh ahead, served while it lasts when a refresh fails, a daily budget, remembered refusals),
 * made with that token and kept under its owner, fetched with it (getticket) by the refresh-once rule
 * (src/tokens/with-token.ts); and the wx.config signature of a page url with one. What differs between the kinds is
 * who owns the tickets and how the caller's identity is checked: the services built on this (the Official Account's
 * src/official-account/ticket-service.ts, the authorizers' src/open-platform/authorizer-ticket-service.ts) say that.
 */
import type { Config } from '../config.js'
import type { Metrics } from '../metrics.js'
import type { TokenStore } from '../store/types.js'
import type { WechatClient } from '../wechat/client.js'
import { jssdkSignature, nonce } from '../wechat/jssdk.js'
import type { Credential, TicketType } from './credential.js'
import { configuredOnly, createGuards } from './guards.js'
import { createLifecycle, type Lifecycle, type Source } from './lifecycle.js'
import { withDeadline, type CallContext } from './refresher.js'
import type { ServedToken } from './rules.js'
import { createTokenCaller, type TokenHolder } from './with-token.js'

/** Owners whose last served ticket is kept in process, to answer while the store is down. */
export const TICKET_OUTAGE_COPIES = 10_000

export interface TicketKeeperOptions {
  /** The service of the token the tickets are fetched with (the refresh-once rule replaces it through this). */
  tokens: TokenHolder & { readonly credential: Credential }
  /** The ticket credential of each type. */
  credentialOf: (type: TicketType) => Credential
  store: TokenStore
  wechat: WechatClient
  serveMarginSeconds: number
  refreshAheadSeconds: number
  requestDeadlineMs: number
  lockLeaseMs: number
  negativeCacheSeconds: number
  hotCacheMs?: number | undefined
  hotCacheMaxApps?: number | undefined
  metrics?: Metrics | undefined
  now?: () => number
}

/** The settings every ticket service is built with, and TICKET_DAILY_BUDGET, from the configuration. */
export function ticketSettings (config: Config) {
  return {
    dailyBudget: config.TICKET_DAILY_BUDGET,
    serveMarginSeconds: config.TOKEN_SERVE_MARGIN_SECONDS,
    refreshAheadSeconds: config.REFRESH_AHEAD_SECONDS,
    requestDeadlineMs: config.REQUEST_DEADLINE_MS,
    lockLeaseMs: config.LOCK_LEASE_MS,
    negativeCacheSeconds: config.NEGATIVE_CACHE_SECONDS,
    hotCacheMs: config.HOT_CACHE_MS,
    hotCacheMaxApps: config.HOT_CACHE_MAX_APPS
  }
}

/** What wx.config needs: the signature of a page url, with the timestamp and nonce it was made with. */
export interface JssdkSignature {
  appId: string
  timestamp: number
  nonceStr: string
  signature: string
}

/**
 * A signature's JSON text, as JSON.stringify and the route's serializer make it, without walking an object: the
 * appId is quoted by JSON.stringify; the timestamp is an integer, the nonce [A-Za-z0-9] and the signature hex.
 */
export function signatureJson ({ appId, timestamp, nonceStr, signature }: JssdkSignature): string {
  return `{"appId":${JSON.stringify(appId)},"timestamp":${timestamp},"nonceStr":"${nonceStr}","signature":"${signature}"}`
}

export function createTicketKeeper (opts: TicketKeeperOptions) {
  const { tokens, wechat } = opts
  const now = opts.now ?? Date.now
  const withToken = createTokenCaller(tokens, now)
  // Tickets are fetched with a token whose secret is known to be right: their guards are the budgets, backoffs and refusals.
  const guards = createGuards(opts.store, configuredOnly(opts.negativeCacheSeconds, now, opts.metrics))
  const lifecycles: Record<TicketType, Lifecycle> = { jsapi: lifecycleOf('jsapi'), wx_card: lifecycleOf('wx_card') }

  function lifecycleOf (type: TicketType): Lifecycle {
    return createLifecycle({
      credential: opts.credentialOf(type),
      madeWith: tokens.credential,
      store: opts.store,
      guards,
      marginMs: opts.serveMarginSeconds * 1000,
      aheadMs: opts.refreshAheadSeconds * 1000,
      requestDeadlineMs: opts.requestDeadlineMs,
      lockLeaseMs: opts.lockLeaseMs,
      hotMs: opts.hotCacheMs ?? 0,
      hotMax: opts.hotCacheMaxApps ?? 10_000,
      copiesMax: TICKET_OUTAGE_COPIES,
      metrics: opts.metrics,
      now
    })
  }

  /**
   * How a ticket of this type is fetched for the token the holder keeps for `id` and `secret` (an appId and its
   * secret, a component and an authorizer): the token is made ready (and the caller's identity checked, as for a
   * token) before the ticket's lock is taken; then getticket with it, by the refresh-once rule.
   */
  function sourceFor (id: string, secret: string, type: TicketType, ctx: CallContext): Source {
    return {
      async verified () {
        await tokens.getToken(id, secret, ctx)
        return true
      },
      fetch: (deadline) => async (control) =>
        await withToken(id, secret, ctx, async (accessToken) => await wechat.fetchTicket(accessToken, type, { ...control, deadline }))
    }
  }

  /** The request's context with one deadline for all of it: the token, getticket, a replaced token and the second getticket. */
  function scoped (ctx: CallContext): CallContext {
    return withDeadline(ctx, ctx.deadline ?? now() + opts.requestDeadlineMs)
  }

  /** Signs a url with a ticket in hand, for the app whose ticket it is. */
  function signed (appId: string, ticket: ServedToken, url: string): JssdkSignature {
    const timestamp = Math.floor(now() / 1000)
    const nonceStr = nonce()
    return { appId, timestamp, nonceStr, signature: jssdkSignature(ticket.accessToken, nonceStr, timestamp, url) }
  }

  /** Each owner and ticket type this instance has served, with the ticket's expiry (for the seconds-left gauge). */
  function known (): Array<[string, string, number]> {
    return Object.values(lifecycles).flatMap((lifecycle) =>
      lifecycle.known().map(([owner, expiresAt]): [string, string, number] => [owner, lifecycle.credential.name, expiresAt]))
  }

  async function close (): Promise<void> {
    await Promise.all(Object.values(lifecycles).map(async (lifecycle) => { await lifecycle.close() }))
  }

  return { lifecycles, sourceFor, scoped, signed, known, close }
}

export type TicketKeeper = ReturnType<typeof createTicketKeeper>
