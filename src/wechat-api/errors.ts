/**
 * Errors in WeChat's own shape, `{"errcode","errmsg"}` with HTTP 200, for the WeChat-shaped endpoints: WeChat's own
 * errcode when WeChat refused, else the errcode a WeChat SDK already handles for what happened here (docs/api.md,
 * "WeChat's own API"). An errcode that makes SDKs fetch a new token (40001, 42001, 40014) is never answered for a
 * refusal of this service's own, so that no SDK loops on one.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiCodeName } from '../api-codes.js'
import { AppError } from '../errors.js'
import { toAppError } from '../plugins/envelope.js'
import { WechatApiError } from '../wechat/errcodes.js'

/** What a WeChat SDK reads of an error: the errcode it branches on, and a message for people. */
export interface WechatShapedError {
  errcode: number
  errmsg: string
}

/** The errcode and WeChat's wording for each refusal of this service's own. */
const OWN: Partial<Record<ApiCodeName, [number, string]>> = {
  INVALID_JSON: [47001, 'data format error'],
  INVALID_ARGUMENT: [40097, 'invalid args'],
  BODY_TOO_LARGE: [47001, 'data format error'],
  UNSUPPORTED_MEDIA_TYPE: [47001, 'data format error'],
  // WeChat's answers to a wrong appid and a wrong secret: what the caller would get from WeChat itself.
  SECRET_MISMATCH: [40125, 'invalid appsecret'],
  APP_NOT_CONFIGURED: [40013, 'invalid appid'],
  // Not allowed to call from here: WeChat's whitelist refusal, which SDKs report without retrying.
  UNAUTHORIZED: [40164, 'invalid ip, not in whitelist'],
  // Limits and budgets: WeChat's own quota answers, which SDKs report without retrying.
  DAILY_BUDGET_EXHAUSTED: [45009, 'reach max api daily quota limit'],
  TICKET_BUDGET_EXHAUSTED: [45009, 'reach max api daily quota limit'],
  RATE_LIMITED: [45011, 'api minute-quota reach limit'],
  UNVERIFIED_CHECKS_LIMITED: [45011, 'api minute-quota reach limit'],
  FORCE_REFRESH_LIMITED: [45011, 'api minute-quota reach limit'],
  // No usable component_verify_ticket held (none pushed yet, or WeChat refused the last one): WeChat's own answer to a
  // ticket it does not take, which SDKs report without retrying (and which no SDK reads as a token to fetch again).
  // WeChat was asked to push one; it arrives within minutes.
  COMPONENT_TICKET_MISSING: [61006, 'component ticket is invalid']
}

/** The refusals that say only that WeChat (or the store) cannot answer now: WeChat's "system error", which SDKs retry. */
const BUSY: [number, string] = [-1, 'system error']

/** How an endpoint answers: errcodes of its own for some refusals, and for each query or body field, missing or malformed. */
export interface Dialect {
  own?: Partial<Record<ApiCodeName, [number, string]>>
  fields: Record<string, { missing: [number, string], invalid: [number, string] }>
}

/** The field a Fastify validation error is about, and whether it is missing (else malformed). */
function fieldOf (err: FastifyError): { field: string, missing: boolean } | undefined {
  const issue = err.validation?.[0]
  if (!issue) return undefined
  if (issue.keyword === 'required') return { field: String((issue.params as { missingProperty?: unknown }).missingProperty), missing: true }
  return { field: issue.instancePath.replace(/^\//, ''), missing: false }
}

/**
 * The WeChat-shaped error for what was thrown (an AppError, or a Fastify error such as a validation failure), and the
 * AppError it stands for (for the request counter and the log).
 */
export function wechatShaped (err: unknown, dialect: Dialect): { body: WechatShapedError, error: AppError } {
  const error = err instanceof AppError ? err : toAppError(err as FastifyError)
  if (error instanceof WechatApiError) {
    // WeChat's answer, passed on: its errcode, and the service's text (WeChat's errmsg can hold the caller's IP).
    return { body: { errcode: error.errcode, errmsg: `${error.message} (wechat-token-cache apiCode ${error.apiCode})` }, error }
  }
  // WeChat's refusal remembered (WeChat not asked again for a while): still WeChat's errcode, never "system error",
  // which SDKs retry.
  const echoed = error.wechatErrcode
  if (echoed !== undefined) return { body: { errcode: echoed, errmsg: `${error.message} (wechat-token-cache apiCode ${error.apiCode})` }, error }
  const about = err instanceof AppError ? undefined : fieldOf(err as FastifyError)
  const rule = about === undefined ? undefined : dialect.fields[about.field]
  const [errcode, text] = rule !== undefined ? (about!.missing ? rule.missing : rule.invalid) : dialect.own?.[error.kind] ?? OWN[error.kind] ?? BUSY
  return { body: { errcode, errmsg: `${text}: ${error.message} (wechat-token-cache apiCode ${error.apiCode})` }, error }
}

/** A route's error handler: every refusal in WeChat's shape (HTTP 200), counted under the apiCode's statusCode. */
export function wechatErrorHandler (app: FastifyInstance, dialect: Dialect) {
  return (err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const { body, error } = wechatShaped(err, dialect)
    if (error.kind === 'INTERNAL') request.log.error({ err: error.cause ?? error, apiCode: error.apiCode }, 'WeChat-shaped endpoint failed')
    else if (error.statusCode >= 500) request.log.warn({ cause: error.cause, apiCode: error.apiCode }, error.message)
    app.finish(request, reply, error.statusCode, request.routeOptions.url)
    if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds))
    reply.code(200).send(body)
  }
}
