/** WeChat errcodes on the token endpoints: what each means to a caller, and which ones may be retried. */
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

/** An errcode WeChat answered; `retryable` only for -1 (system busy). */
export class WechatApiError extends AppError {
  readonly errcode: number
  readonly rid: string | undefined
  readonly retryable: boolean

  constructor (errcode: number, errmsg: unknown) {
    const info = KNOWN.get(errcode)
    const rid = typeof errmsg === 'string' ? /rid:\s*([0-9a-f-]{8,64})/i.exec(errmsg)?.[1] : undefined
    const text = info?.text ?? 'unexpected errcode'
    super(info?.kind ?? 'WECHAT_ERROR', `WeChat errcode ${errcode} (${text})${rid ? `, rid ${rid}` : ''}`)
    this.errcode = errcode
    this.rid = rid
    this.retryable = errcode === -1
  }
}
