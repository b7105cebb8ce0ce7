/**
 * The JS-SDK and card tickets of the accounts that authorized a component of WECHAT_COMPONENTS, kept as an Official
 * Account's are (src/tokens/tickets.ts: store and hot cache, one getticket per herd over every instance, refresh ahead,
 * served while it lasts when a refresh fails, TICKET_DAILY_BUDGET per authorizer and type, remembered refusals), under
 * the authorizer's space beside its token, and fetched with that token by the refresh-once rule: a token WeChat refuses
 * (40001, 42001) is replaced once, with the authorizer's refresh token, and getticket asked again once. The authorizer's
 * token is got before a ticket's lock is taken: an account that has not authorized the component is answered
 * AUTHORIZER_NOT_AUTHORIZED without any ticket being fetched. When the authorization ends, its tickets are removed with
 * its token.
 */
import type { ComponentConfig } from '../config.js'
import { authorizerTicketCredential, type TicketType } from '../tokens/credential.js'
import type { CallContext } from '../tokens/refresher.js'
import type { ServedToken } from '../tokens/rules.js'
import { createTicketKeeper, type JssdkSignature, type TicketKeeperOptions } from '../tokens/tickets.js'
import type { AuthorizerTokenService } from './authorizer-token-service.js'
import { authorizerSpace } from './refresh-tokens.js'

export interface AuthorizerTicketServiceOptions extends Omit<TicketKeeperOptions, 'tokens' | 'credentialOf'> {
  authorizerTokens: AuthorizerTokenService
  components: ReadonlyMap<string, ComponentConfig>
  /** getticket calls per authorizer per ticket type per day (Beijing time): TICKET_DAILY_BUDGET. */
  dailyBudget: number
}

const TYPES: readonly TicketType[] = ['jsapi', 'wx_card']

export function createAuthorizerTicketService (opts: AuthorizerTicketServiceOptions) {
  const { authorizerTokens, store } = opts
  // In the refresh-once rule, the component and the authorizer stand where an Official Account's appId and secret do.
  const keeper = createTicketKeeper({ ...opts, tokens: authorizerTokens, credentialOf: (type) => authorizerTicketCredential(type, opts.dailyBudget) })
  const { lifecycles } = keeper

  /** The hot-cache answer, synchronously (under the component's secret, as the authorizer's token). */
  function fromHot (componentAppId: string, authorizerAppId: string, type: TicketType): ServedToken | undefined {
    const component = opts.components.get(componentAppId)
    return component === undefined ? undefined : lifecycles[type].fromHot(authorizerSpace(componentAppId, authorizerAppId), component.appSecret)
  }

  /** The authorizer's ticket of this type, for a caller that looked in the hot cache already (the routes). */
  async function afterHotMiss (componentAppId: string, authorizerAppId: string, type: TicketType, ctx: CallContext): Promise<ServedToken> {
    const { component, fp } = authorizerTokens.admit(componentAppId)
    const scoped = keeper.scoped(ctx)
    return await lifecycles[type].afterHotMiss(authorizerSpace(componentAppId, authorizerAppId), component.appSecret, fp,
      keeper.sourceFor(componentAppId, authorizerAppId, type, scoped), scoped)
  }

  /** The wx.config fields of a page url for the authorizer (its appId, its jsapi ticket), past the hot cache. */
  async function signature (componentAppId: string, authorizerAppId: string, url: string, ctx: CallContext): Promise<JssdkSignature> {
    return keeper.signed(authorizerAppId, await afterHotMiss(componentAppId, authorizerAppId, 'jsapi', ctx), url)
  }

  /** The authorization ended: the authorizer's tickets are removed from the store and from every instance's memory. */
  async function revoke (componentAppId: string, authorizerAppId: string): Promise<void> {
    const owner = authorizerSpace(componentAppId, authorizerAppId)
    for (const type of TYPES) {
      const { credential } = lifecycles[type]
      await store.delete(owner, credential.slot)
      await store.notify(credential.subject(owner)).catch(() => {})
    }
  }

  return { fromHot, afterHotMiss, signature, signed: keeper.signed, revoke, known: keeper.known, close: keeper.close }
}

export type AuthorizerTicketService = ReturnType<typeof createAuthorizerTicketService>
