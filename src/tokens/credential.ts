/**
 * The credentials the lifecycle keeps for an app: its access token, and the tickets WeChat issues for that token.
 * Each has a slot of its own in the store (entry, generation, lock, counters), its own change messages and its own
 * daily budget of upstream calls; the access token's keys keep the names they always had.
 */
import type { ApiCodeName } from '../api-codes.js'
import { TOKEN_SLOT } from '../store/types.js'
import type { TokenMode } from '../wechat/access-token.js'
import type { WechatApi } from '../wechat/errcodes.js'

export type CredentialName = 'access_token' | 'jsapi_ticket' | 'wx_card_ticket' | 'wecom_token' | 'wecom_corp_ticket' | 'wecom_agent_ticket' | 'component_token' | 'authorizer_token'
  | 'authorizer_jsapi_ticket' | 'authorizer_wx_card_ticket'
/** What the guards stand before: a credential's fetch, or (code2session) a Mini Program login code's exchange. */
export type GuardedName = CredentialName | 'code2session'
export type TicketType = 'jsapi' | 'wx_card'
/** WeCom's tickets: the corp's (get_jsapi_ticket, for wx.config) and an application's (agent_config, for wx.agentConfig). */
export type WecomTicketType = 'corp' | 'agent'

/** What the guards need to know of the upstream calls they stand before (see src/tokens/guards.ts). */
export interface Guarded {
  /** Its name in metrics (the `credential` label) and logs. */
  readonly name: GuardedName
  /** The upstream API it is called with, whose errcodes its guards remember. */
  readonly api: WechatApi
  /** Prefix of its per-app value names (lock, budget counter, remembered refusals): '' for the access token. */
  readonly prefix: string
  /** Upstream calls allowed per owner in each budget window. */
  readonly budget: number
  /**
   * The window the budget counts in: 'day' (Beijing time, as WeChat counts its quotas), or 'hour' (UTC clock hours,
   * for WeCom's tickets, whose limits are hourly).
   */
  readonly budgetWindow: 'day' | 'hour'
  /** The apiCode of a call refused because the day's budget is used up. */
  readonly budgetExhausted: ApiCodeName
  /**
   * Its call carries what a caller sent (a login code): an errcode WeChat does not document may be about that input
   * rather than the app, so it backs the app off only when it says WeChat failed (unreachable, busy, not an answer).
   */
  readonly callerInput: boolean
  /**
   * Its fetch is what proves a caller's secret (the access token's): WeChat's refusals of a secret are remembered for
   * that secret and read before any fetch of it, and a secret WeChat accepted is marked verified for the owner. Other
   * credentials remember such a refusal for their own calls alone.
   */
  readonly provesSecret: boolean
  /**
   * How a new fetch relates to the one served: 'stable' when it returns the same credential (a stable_token call),
   * 'classic' when it may retire the one other instances serve (a classic token, a ticket). Decides the refresh-ahead
   * window, whether a copy may be put back into a store that lost it, and whether the replacement of a reported one is
   * spaced as a forced refresh.
   */
  readonly mode: TokenMode
}

export interface Credential extends Guarded {
  readonly name: CredentialName
  /** The upstream API it is fetched with, whose errcodes its guards remember. */
  readonly api: 'token' | 'ticket' | 'wecom_token' | 'wecom_ticket' | 'component'
  /** The store slot of its entry. */
  readonly slot: string
  /** The subject of its change messages for an owner (an appId, or the opaque owner key of another kind). */
  subject: (owner: string) => string
  /** The owner a change message's subject names, or undefined when it names another credential. */
  ownerOf: (subject: string) => string | undefined
}

export function accessTokenCredential (mode: TokenMode, dailyBudget: number): Credential {
  return {
    name: 'access_token',
    api: 'token',
    slot: TOKEN_SLOT,
    prefix: '',
    mode,
    budget: dailyBudget,
    budgetWindow: 'day',
    budgetExhausted: 'DAILY_BUDGET_EXHAUSTED',
    callerInput: false,
    provesSecret: true,
    // The subjects it always had: the bare appId. Every other credential's subject has a ':' or a '|'.
    subject: (appId) => appId,
    ownerOf: (subject) => /[:|]/.test(subject) ? undefined : subject
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
    budget: dailyBudget,
    budgetWindow: 'day',
    budgetExhausted: 'TICKET_BUDGET_EXHAUSTED',
    callerInput: false,
    provesSecret: false,
    subject: (appId) => appId + suffix,
    ownerOf: (subject) => subject.endsWith(suffix) && !subject.includes('|') ? subject.slice(0, -suffix.length) : undefined
  }
}

/**
 * A WeCom application's access token. Its owner is opaque to the engine: the corpId and a keyed fingerprint of the
 * application's secret (`<corpId>:<fingerprint>`), so two applications of one corp never share or overwrite a token.
 * WeCom answers the same token to every fetch within its lifetime, as stable_token does.
 */
export function wecomTokenCredential (dailyBudget: number): Credential {
  return {
    name: 'wecom_token',
    api: 'wecom_token',
    slot: TOKEN_SLOT,
    prefix: '',
    mode: 'stable',
    budget: dailyBudget,
    budgetWindow: 'day',
    budgetExhausted: 'DAILY_BUDGET_EXHAUSTED',
    callerInput: false,
    provesSecret: true,
    ...taggedSubjects('wecom_token')
  }
}

/**
 * A WeCom ticket: the corp's (owner: the corpId, whichever of its applications' tokens fetched it) or an application's
 * (owner: the owner of the application's token, so one per application, never shared with another of the corp). Its
 * budget is hourly, as WeCom's limits are (400 an hour per corp, 100 per application). Whether WeCom retires the ticket
 * served when asked again is not documented: a fetch is taken to retire it, as a classic credential.
 */
export function wecomTicketCredential (type: WecomTicketType, hourlyBudget: number): Credential {
  const name = type === 'corp' ? 'wecom_corp_ticket' : 'wecom_agent_ticket'
  return {
    name,
    api: 'wecom_ticket',
    slot: name,
    prefix: `${name}:`,
    mode: 'classic',
    budget: hourlyBudget,
    budgetWindow: 'hour',
    budgetExhausted: 'TICKET_BUDGET_EXHAUSTED',
    callerInput: false,
    provesSecret: false,
    ...taggedSubjects(name)
  }
}

/**
 * An Open Platform component's (third-party platform's) component_access_token. Its owner is the component appId; it
 * is fetched with the component's secret and the component_verify_ticket WeChat last pushed. A new one is issued at
 * every fetch (the previous one lasting a while): a classic credential, refreshed ahead by one fetch across instances.
 */
export function componentTokenCredential (dailyBudget: number): Credential {
  return openPlatformCredential('component_token', dailyBudget)
}

/**
 * An authorizer's authorizer_access_token (an account that authorized a component). Its owner is opaque to the engine
 * (the component and the authorizer, one space); it is fetched with the component's token and the authorizer's refresh
 * token, and each fetch issues a new one: a classic credential.
 */
export function authorizerTokenCredential (dailyBudget: number): Credential {
  return openPlatformCredential('authorizer_token', dailyBudget)
}

/** An Open Platform credential: answered by the component API's errcodes, classic, with a daily budget per owner. */
function openPlatformCredential (name: 'component_token' | 'authorizer_token', dailyBudget: number): Credential {
  return {
    name,
    api: 'component',
    slot: TOKEN_SLOT,
    prefix: '',
    mode: 'classic',
    budget: dailyBudget,
    budgetWindow: 'day',
    budgetExhausted: 'DAILY_BUDGET_EXHAUSTED',
    callerInput: false,
    provesSecret: false,
    ...taggedSubjects(name)
  }
}

/**
 * A JS-SDK or card ticket of an authorizer (getticket with its authorizer_access_token). Its owner is the authorizer's
 * (opaque to the engine, as its token's): one per authorizer and type, budgeted per authorizer (TICKET_DAILY_BUDGET).
 * A fetch may replace the one served, as an Official Account's ticket.
 */
export function authorizerTicketCredential (type: TicketType, dailyBudget: number): Credential {
  const name = type === 'jsapi' ? 'authorizer_jsapi_ticket' : 'authorizer_wx_card_ticket'
  return { ...ticketCredential(type, dailyBudget), name, slot: name, prefix: `${name}:`, ...taggedSubjects(name) }
}

/**
 * A Mini Program login: a wx.login code exchanged for the user's session key (jscode2session). Nothing is kept of it
 * but what the guards keep: its daily budget, a backoff while WeChat fails, refusals about the app remembered.
 */
export function loginGuarded (dailyBudget: number): Guarded {
  // A login replaces nothing anyone holds: 'stable'.
  return { name: 'code2session', api: 'session', prefix: 'code2session:', budget: dailyBudget, budgetWindow: 'day', budgetExhausted: 'SESSION_BUDGET_EXHAUSTED', callerInput: true, provesSecret: false, mode: 'stable' }
}

/**
 * The change-message subjects of a kind added after the access token and the tickets: `<tag>|<owner>`, so that an
 * owner may hold any character (a corpId and an application's fingerprint, say) and no subject is read as another
 * kind's.
 */
export function taggedSubjects (tag: string): Pick<Credential, 'subject' | 'ownerOf'> {
  const head = `${tag}|`
  return {
    subject: (owner) => head + owner,
    ownerOf: (subject) => subject.startsWith(head) ? subject.slice(head.length) : undefined
  }
}
