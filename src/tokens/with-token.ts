/**
 * The one rule for calls made with an access token (getticket, the Mini Program phone number, WeCom's tickets): when
 * WeChat refuses the token (40001 / 42001, WeCom's 40014 / 42001: another system replaced it, or it expired early),
 * replace it once, only while it is still the current one, and call again, once. The replacement is a normal fetch,
 * never a forced one:
 * in stable mode that answers WeChat's current token (whoever fetched it) without spending one of the day's forced
 * refreshes or retiring another system's token; forcing stays the owner's act, on the passive refresh route.
 *
 * When the call is refused again (or the replacement brought no new token), the refusal is remembered for
 * NEGATIVE_CACHE_SECONDS: meanwhile calls go ahead with the current token, but a refusal does not replace it again,
 * so a refusal that persists costs one token fetch per app per period, whoever sends the requests. Nothing loops,
 * and nothing runs past the request's deadline.
 */
import { AppError } from '../errors.js'
import { WechatApiError } from '../wechat/errcodes.js'
import type { CallContext } from './refresher.js'
import type { ServedToken } from './rules.js'

export type TokenCaller = <T>(id: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>) => Promise<T>

/** A refresh the caller asked for: the token to use now, and why it is not a new one when it is not. */
export interface RefreshOutcome {
  token: ServedToken | null
  notice?: AppError
}

/**
 * What the rule needs of the service that keeps the token (an Official Account's, a WeCom application's, an Open
 * Platform authorizer's), for the id and secret a caller sent (an appId or a corpId and its secret; for an authorizer,
 * the component and the authorizer's appId).
 */
export interface TokenHolder {
  getToken: (id: string, secret: string, ctx: CallContext) => Promise<ServedToken>
  /** Replaces the token only while `reported` is still the current one (`force: false`: by a normal fetch). */
  refreshReported: (id: string, secret: string, reported: string, ctx: CallContext, options: { force: boolean }) => Promise<RefreshOutcome>
  /** Whether a replaced token was refused again within NEGATIVE_CACHE_SECONDS. */
  refusedAgainRecently: (id: string, secret: string) => Promise<boolean>
  rememberRefusedAgain: (id: string, secret: string, message: string) => Promise<void>
}

function refusedForToken (err: unknown): err is WechatApiError {
  return err instanceof WechatApiError && err.tokenRefused
}

export function createTokenCaller (tokens: TokenHolder, now: () => number = Date.now): TokenCaller {
  return async function withToken<T> (appId: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>): Promise<T> {
    const token = await tokens.getToken(appId, secret, ctx)
    try {
      return await call(token.accessToken)
    } catch (err) {
      if (!refusedForToken(err)) throw err
      if (await tokens.refusedAgainRecently(appId, secret)) {
        throw new AppError('WECHAT_TOKEN_REFUSED', `${err.message}; the token was replaced and refused again a short while ago, ` +
          'so it is not replaced again for now')
      }
      if (ctx.deadline !== undefined && ctx.deadline <= now()) throw err
      ctx.log.warn({ errcode: err.errcode, rid: err.rid }, 'WeChat refused the access token on a call made with it; replacing the token once')
      const outcome = await tokens.refreshReported(appId, secret, token.accessToken, ctx, { force: false })
      const replaced = outcome.token !== null && outcome.token.accessToken !== token.accessToken ? outcome.token : undefined
      // Not replaced yet (the app's replacements are spaced, or its fetches backed off): nothing was tried again, so
      // nothing is remembered; the next request past the spacing or the backoff replaces it.
      if (!replaced && outcome.notice) {
        throw new AppError('WECHAT_TOKEN_REFUSED', `${err.message}; the token was not replaced yet: ${outcome.notice.message}`,
          outcome.notice.retryAfterSeconds === undefined ? undefined : { retryAfterSeconds: outcome.notice.retryAfterSeconds })
      }
      try {
        if (!replaced) throw new AppError('WECHAT_TOKEN_REFUSED', `${err.message}; WeChat gave the same token again`)
        return await call(replaced.accessToken)
      } catch (again) {
        if (again instanceof AppError && again.kind === 'WECHAT_TOKEN_REFUSED') {
          await tokens.rememberRefusedAgain(appId, secret, again.message).catch(() => {})
        }
        throw again
      }
    }
  }
}
