/**
 * The one rule for calls WeChat makes with an app's access token (getticket, the Mini Program phone number): when
 * WeChat refuses the token (40001 / 42001: another system fetched a new one, or it expired early), replace it once by
 * the passive refresh route's rule (only while it is still the current one; WeChat's forced-refresh limits apply) and
 * call again, once. A second refusal is the caller's error; nothing loops.
 */
import { WechatApiError } from '../wechat/errcodes.js'
import type { CallContext, TokenService } from '../token-service.js'

export type TokenCaller = <T>(appId: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>) => Promise<T>

export function createTokenCaller (tokens: TokenService): TokenCaller {
  return async function withToken<T> (appId: string, secret: string, ctx: CallContext, call: (accessToken: string) => Promise<T>): Promise<T> {
    const token = await tokens.getToken(appId, secret, ctx)
    try {
      return await call(token.accessToken)
    } catch (err) {
      if (!(err instanceof WechatApiError) || !err.tokenRefused) throw err
      ctx.log.warn({ errcode: err.errcode, rid: err.rid }, 'WeChat refused the access token on a call made with it; replacing the token once')
      const outcome = await tokens.refreshReported(appId, secret, token.accessToken, ctx)
      if (outcome.token === null || outcome.token.accessToken === token.accessToken) throw outcome.notice ?? err
      return await call(outcome.token.accessToken)
    }
  }
}
