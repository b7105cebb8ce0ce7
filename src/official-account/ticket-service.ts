/**
 * JS-SDK and card tickets: each type a credential of the app, kept by the same lifecycle as the access token (store
 * and hot cache, one fetch per herd over every instance, refresh ahead, served while it lasts when a refresh fails,
 * a daily budget, remembered refusals), fetched with the app's token by the refresh-once rule. The caller's appSecret
 * is checked as for a token, and before any ticket is fetched: a wrong secret never takes a ticket's lock. The tickets
 * themselves are kept as every token's are (src/tokens/tickets.ts); this says whose they are.
 */
import type { FastifyBaseLogger } from 'fastify'
import { normalized, type CallContext, type ServedToken, type TokenService } from './token-service.js'
import { ticketCredential, type TicketType } from '../tokens/credential.js'
import { createTicketKeeper, type JssdkSignature, type TicketKeeperOptions } from '../tokens/tickets.js'

export { jssdkSignature } from '../wechat/jssdk.js'
export type { JssdkSignature } from '../tokens/tickets.js'

export interface TicketServiceOptions extends Omit<TicketKeeperOptions, 'tokens' | 'credentialOf'> {
  tokens: TokenService
  /** Upstream getticket calls per app per ticket type per day (Beijing time). */
  dailyBudget: number
  /** WECHAT_APPS: the apps whose tickets the scheduler keeps fresh (those that ever fetched one). */
  apps?: ReadonlyMap<string, string>
}

export function createTicketService (opts: TicketServiceOptions) {
  const { tokens, wechat } = opts
  const keeper = createTicketKeeper({ ...opts, credentialOf: (type) => ticketCredential(type, opts.dailyBudget) })
  const { lifecycles, sourceFor, scoped: within, signed } = keeper

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
    const scoped = within(ctx)
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
    return await lifecycles[type].get(appId, fp, fp, {
      verified: async () => true,
      fetch: (deadline) => async (control) => await wechat.fetchTicket(accessToken, type, { ...control, deadline })
    }, within(ctx))
  }

  /** The wx.config fields for a page url (an absolute http(s) url; its #fragment is ignored), past the hot cache. */
  async function signature (anyAppId: string, secret: string, url: string, ctx: CallContext): Promise<JssdkSignature> {
    const ticket = await afterHotMiss(anyAppId, secret, 'jsapi', ctx)
    return signed(normalized(anyAppId), ticket, url)
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

  return { fromHot, getTicket, afterHotMiss, forCurrentToken, signature, signed, refreshIfDue, known: keeper.known, close: keeper.close }
}

export type TicketService = ReturnType<typeof createTicketService>
