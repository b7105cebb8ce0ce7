/**
 * WeChat errcodes: what each means to a caller, and which ones may be retried. The same number can mean different
 * things: 40001 on a token endpoint is a wrong secret, on a call made with a token (getticket, the phone number) it is
 * that token, invalidated or not the latest; 45011 on jscode2session is one user's logins, not the app's calls.
 */
import type { ApiCodeName } from '../api-codes.js'
import { AppError } from '../errors.js'

interface ErrcodeInfo { readonly kind: ApiCodeName, readonly text: string }

const KNOWN: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40001, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid credential' }],
  [40002, { kind: 'WECHAT_ERROR', text: 'invalid grant_type' }],
  [40013, { kind: 'WECHAT_INVALID_APPID', text: 'invalid appid' }],
  [40125, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid appsecret' }],
  [40164, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not in the whitelist' }],
  [40243, { kind: 'WECHAT_SECRET_FROZEN', text: 'AppSecret frozen' }],
  [41002, { kind: 'WECHAT_ERROR', text: 'appid missing' }],
  [41004, { kind: 'WECHAT_ERROR', text: 'secret missing' }],
  [43002, { kind: 'WECHAT_ERROR', text: 'require POST' }],
  [45009, { kind: 'WECHAT_DAILY_QUOTA', text: 'daily quota reached' }],
  [45011, { kind: 'WECHAT_RATE_LIMITED', text: 'minute quota reached' }],
  [47001, { kind: 'WECHAT_ERROR', text: 'data format error' }],
  [89503, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP needs the admin\'s confirmation' }],
  [89506, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP refused by the admin for 24 hours' }],
  [89507, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP refused by the admin for 1 hour' }]
])

/** The same errcodes on calls made with an access token. */
const WITH_TOKEN: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40001, { kind: 'WECHAT_TOKEN_REFUSED', text: 'access_token invalid or not the latest' }],
  [40014, { kind: 'WECHAT_TOKEN_REFUSED', text: 'access_token invalid' }],
  [42001, { kind: 'WECHAT_TOKEN_REFUSED', text: 'access_token expired' }],
  [40029, { kind: 'WECHAT_INVALID_CODE', text: 'invalid code' }],
  [40097, { kind: 'WECHAT_ERROR', text: 'invalid args' }],
  [41001, { kind: 'WECHAT_ERROR', text: 'access_token missing' }],
  [45009, { kind: 'WECHAT_DAILY_QUOTA', text: 'daily quota reached' }],
  [45011, { kind: 'WECHAT_RATE_LIMITED', text: 'minute quota reached' }],
  [40164, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not in the whitelist' }]
])

/** jscode2session: a Mini Program login code exchanged, with the app's secret, for the user's session key. */
const SESSION: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40001, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid credential' }],
  [40013, { kind: 'WECHAT_INVALID_APPID', text: 'invalid appid' }],
  [40125, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid appsecret' }],
  [40029, { kind: 'WECHAT_INVALID_CODE', text: 'invalid code' }],
  [40163, { kind: 'WECHAT_CODE_USED', text: 'code been used' }],
  [40226, { kind: 'WECHAT_USER_BLOCKED', text: 'high-risk user blocked' }],
  [40164, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not in the whitelist' }],
  [40243, { kind: 'WECHAT_SECRET_FROZEN', text: 'AppSecret frozen' }],
  [41008, { kind: 'WECHAT_ERROR', text: 'code missing' }],
  [45009, { kind: 'WECHAT_DAILY_QUOTA', text: 'daily quota reached' }],
  [45011, { kind: 'WECHAT_USER_RATE_LIMITED', text: 'this user\'s logins exceed 100 a minute' }],
  [89503, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP needs the admin\'s confirmation' }],
  [89506, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP refused by the admin for 24 hours' }],
  [89507, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'IP refused by the admin for 1 hour' }]
])

/** WeCom's gettoken (corpid and an application's corpsecret): 40001 there is a wrong secret, 45009 "too frequent". */
const WECOM_TOKEN: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40001, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid secret' }],
  [40013, { kind: 'WECHAT_INVALID_APPID', text: 'invalid corpid' }],
  [41002, { kind: 'WECHAT_ERROR', text: 'corpid missing' }],
  [41004, { kind: 'WECHAT_ERROR', text: 'corpsecret missing' }],
  [45009, { kind: 'WECHAT_RATE_LIMITED', text: 'api freq out of limit' }],
  [45033, { kind: 'WECHAT_RATE_LIMITED', text: 'too many concurrent calls' }],
  [60020, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not allowed' }]
])

/**
 * WeCom's calls made with an application's token (the corp's jsapi ticket, the application's agent_config ticket):
 * 40014 and 42001 are the token, ended early or expired; 45009 is WeCom's hourly limit.
 */
const WECOM_WITH_TOKEN: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40014, { kind: 'WECHAT_TOKEN_REFUSED', text: 'invalid access_token' }],
  [42001, { kind: 'WECHAT_TOKEN_REFUSED', text: 'access_token expired' }],
  [41001, { kind: 'WECHAT_ERROR', text: 'access_token missing' }],
  [40056, { kind: 'WECHAT_ERROR', text: 'invalid agentid' }],
  [40058, { kind: 'WECHAT_ERROR', text: 'invalid parameter' }],
  [45009, { kind: 'WECHAT_RATE_LIMITED', text: 'api freq out of limit (the hourly ticket limit)' }],
  [45033, { kind: 'WECHAT_RATE_LIMITED', text: 'too many concurrent calls' }],
  [60020, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not allowed' }],
  [301002, { kind: 'WECHAT_ERROR', text: 'the token belongs to another application' }]
])

/**
 * The Open Platform's component calls (api_component_token, api_start_push_ticket, and those made with the component's
 * token): 61004 is the IP whitelist of the third-party platform, 61005 and 61006 the component_verify_ticket sent
 * (expired, invalid), 61023 an authorizer's refresh token that is not (or no longer) the one WeChat holds.
 */
const COMPONENT: ReadonlyMap<number, ErrcodeInfo> = new Map([
  [-1, { kind: 'WECHAT_BUSY', text: 'system busy' }],
  [40013, { kind: 'WECHAT_INVALID_APPID', text: 'invalid component appid' }],
  [40125, { kind: 'WECHAT_INVALID_SECRET', text: 'invalid component appsecret' }],
  [41002, { kind: 'WECHAT_ERROR', text: 'component appid missing' }],
  [41004, { kind: 'WECHAT_ERROR', text: 'component secret missing' }],
  [45009, { kind: 'WECHAT_DAILY_QUOTA', text: 'daily quota reached' }],
  [45011, { kind: 'WECHAT_RATE_LIMITED', text: 'minute quota reached' }],
  [61004, { kind: 'WECHAT_IP_NOT_ALLOWED', text: 'caller IP not in the third-party platform\'s whitelist' }],
  [61005, { kind: 'COMPONENT_TICKET_MISSING', text: 'component_verify_ticket expired' }],
  [61006, { kind: 'COMPONENT_TICKET_MISSING', text: 'component_verify_ticket invalid' }],
  // The calls made with the component's token (api_authorizer_token, api_query_auth, api_get_authorizer_list).
  [40001, { kind: 'WECHAT_TOKEN_REFUSED', text: 'component_access_token invalid or not the latest' }],
  [42001, { kind: 'WECHAT_TOKEN_REFUSED', text: 'component_access_token expired' }],
  [40097, { kind: 'WECHAT_ERROR', text: 'invalid args' }],
  [61003, { kind: 'AUTHORIZER_NOT_AUTHORIZED', text: 'component is not authorized by this account' }],
  [61009, { kind: 'AUTHORIZATION_CODE_INVALID', text: 'authorization code invalid or used' }],
  [61010, { kind: 'AUTHORIZATION_CODE_INVALID', text: 'authorization code expired' }],
  [61023, { kind: 'AUTHORIZER_NOT_AUTHORIZED', text: 'authorizer_refresh_token invalid' }]
])

/**
 * Which API answered: the token endpoints, getticket, the Mini Program phone number, jscode2session, WeCom's gettoken,
 * WeCom's ticket calls, the Open Platform's component calls.
 */
export type WechatApi = 'token' | 'ticket' | 'phone' | 'session' | 'wecom_token' | 'wecom_ticket' | 'component'

const TABLES: Record<WechatApi, ReadonlyMap<number, ErrcodeInfo>> = {
  token: KNOWN, ticket: WITH_TOKEN, phone: WITH_TOKEN, session: SESSION, wecom_token: WECOM_TOKEN, wecom_ticket: WECOM_WITH_TOKEN, component: COMPONENT
}

/** An errcode WeChat answered; `retryable` only for -1 (system busy). */
export class WechatApiError extends AppError {
  readonly errcode: number
  readonly rid: string | undefined
  readonly retryable: boolean
  readonly api: WechatApi

  constructor (errcode: number, errmsg: unknown, api: WechatApi = 'token') {
    const info = TABLES[api].get(errcode)
    const rid = typeof errmsg === 'string' ? /rid:\s*([0-9a-f-]{8,64})/i.exec(errmsg)?.[1] : undefined
    const text = info?.text ?? 'unexpected errcode'
    super(info?.kind ?? 'WECHAT_ERROR', `WeChat errcode ${errcode} (${text})${rid ? `, rid ${rid}` : ''}`)
    this.errcode = errcode
    this.rid = rid
    this.retryable = errcode === -1
    this.api = api
  }

  /** On a call made with an access token: WeChat refused the token (invalidated elsewhere, or expired). */
  get tokenRefused (): boolean {
    return this.kind === 'WECHAT_TOKEN_REFUSED'
  }
}
