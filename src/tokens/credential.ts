/**
 * The credentials the lifecycle keeps for an app: its access token, and the tickets WeChat issues for that token.
 * Each has a slot of its own in the store (entry, generation, lock, counters), its own change messages and its own
 * daily budget of upstream calls; the access token's keys keep the names they always had.
 */
import { TOKEN_SLOT } from '../store/types.js'
import type { TokenMode } from '../wechat/client.js'

export type CredentialName = 'access_token' | 'jsapi_ticket' | 'wx_card_ticket'
export type TicketType = 'jsapi' | 'wx_card'

export interface Credential {
  /** Its name in metrics (the `credential` label) and logs. */
  readonly name: CredentialName
  /** The upstream API it is fetched with, whose errcodes its guards remember. */
  readonly api: 'token' | 'ticket'
  /** The store slot of its entry. */
  readonly slot: string
  /** Prefix of its per-app value names (lock, budget counter, remembered refusals): '' for the access token. */
  readonly prefix: string
  /**
   * How a new fetch relates to the one served: 'stable' when it returns the same credential (a stable_token call),
   * 'classic' when it may retire the one other instances serve (a classic token, a ticket). Decides the refresh-ahead
   * window and whether a copy may be put back into a store that lost it.
   */
  readonly mode: TokenMode
  /** Upstream calls allowed per app per day (Beijing time). */
  readonly dailyBudget: number
  /** The subject of its change messages for an app. */
  subject: (appId: string) => string
  /** The appId a change message's subject names, or undefined when it names another credential. */
  appIdOf: (subject: string) => string | undefined
}

export function accessTokenCredential (mode: TokenMode, dailyBudget: number): Credential {
  return {
    name: 'access_token',
    api: 'token',
    slot: TOKEN_SLOT,
    prefix: '',
    mode,
    dailyBudget,
    subject: (appId) => appId,
    appIdOf: (subject) => subject.includes(':') ? undefined : subject
  }
}

/** A JS-SDK ticket (`jsapi`) or a card ticket (`wx_card`): a fetch may replace the one served, as a classic token. */
export function ticketCredential (type: TicketType, dailyBudget: number): Credential {
  const name: CredentialName = type === 'jsapi' ? 'jsapi_ticket' : 'wx_card_ticket'
  const suffix = `:${name}`
  return {
    name,
    api: 'ticket',
    slot: name,
    prefix: `${name}:`,
    mode: 'classic',
    dailyBudget,
    subject: (appId) => appId + suffix,
    appIdOf: (subject) => subject.endsWith(suffix) ? subject.slice(0, -suffix.length) : undefined
  }
}
