/** The service's error type: every failure that reaches a caller is an AppError with an apiCode from api-codes.ts. */
import { ApiCodes, type ApiCodeName } from './api-codes.js'

export class AppError extends Error {
  readonly apiCode: number
  readonly statusCode: number
  readonly kind: ApiCodeName
  /** Seconds after which asking again can succeed (sent as retry-after), when the service knows. */
  readonly retryAfterSeconds: number | undefined
  /** WeChat's errcode, when this repeats a refusal WeChat gave earlier (remembered, WeChat not asked again). */
  readonly wechatErrcode: number | undefined

  constructor (kind: ApiCodeName, message: string, options?: { cause?: unknown, retryAfterSeconds?: number, wechatErrcode?: number | undefined }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'AppError'
    this.kind = kind
    this.apiCode = ApiCodes[kind].apiCode
    this.statusCode = ApiCodes[kind].statusCode
    this.retryAfterSeconds = options?.retryAfterSeconds
    this.wechatErrcode = options?.wechatErrcode
  }
}
