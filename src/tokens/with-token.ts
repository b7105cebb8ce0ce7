/**
 * The one rule for calls WeChat makes with an app's access token (getticket, the Mini Program phone number): when
 * WeChat refuses the token (40001 / 42001: another system replaced it, or it expired early), replace it once, only
 * while it is still the current one, and call again, once. The replacement is a normal fetch, never a forced one:
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
import type { CallContext, TokenService } from '../official-account/token-service.js'

export type TokenCaller = <T>(appId: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>) => Promise<T>

function refusedForToken (err: unknown): err is WechatApiError {
  return err instanceof WechatApiError && err.tokenRefused
}

export function createTokenCaller (tokens: TokenService, now: () => number = Date.now): TokenCaller {
  return async function withToken<T> (appId: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>): Promise<T> {
    const token = await tokens.getToken(appId, secret, ctx)
    try {
      return await call(token.accessToken)
    } catch (err) {
      if (!refusedForToken(err)) throw err
      if (await tokens.guards.refusedAgainRecently(appId)) {
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
          await tokens.guards.rememberRefusedAgain(appId, again.message).catch(() => {})
        }
        throw again
      }
    }
  }
}
