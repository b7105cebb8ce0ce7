/**
 * GenAuth's Mini Program phone-number route: the code of a getPhoneNumber button exchanged for the user's number, with
 * the access token of the Mini Program the identifier names (WECHAT_IDENTIFIERS → an app of WECHAT_APPS). A code and
 * a number are personal data: never logged, cached, or counted in a metric.
 */
import { miniProgramLookup } from './mini-programs.js'
import type { CallContext, TokenService } from '../official-account/token-service.js'
import { createTokenCaller } from '../tokens/with-token.js'
import { withDeadline } from '../tokens/refresher.js'
import type { PhoneInfo, WechatClient } from '../wechat/client.js'

export interface PhoneServiceOptions {
  tokens: TokenService
  wechat: WechatClient
  /** WECHAT_IDENTIFIERS: identifier to appId. */
  identifiers: ReadonlyMap<string, string>
  /** WECHAT_APPS: appId to secret. */
  apps: ReadonlyMap<string, string>
  requestDeadlineMs: number
  now?: () => number
}

export function createPhoneService (opts: PhoneServiceOptions) {
  const now = opts.now ?? Date.now
  const withToken = createTokenCaller(opts.tokens, now)

  /** The appId an identifier names, or IDENTIFIER_NOT_CONFIGURED. */
  const appOf = miniProgramLookup(opts.identifiers, opts.apps)

  /** The phone number behind a code (single use, 5 minutes; WECHAT_INVALID_CODE when WeChat refuses it). */
  async function phoneNumber (identifier: string, code: string, ctx: CallContext): Promise<PhoneInfo> {
    const { appId, secret } = appOf(identifier)
    // One deadline for the request: the token, the call, a replaced token and the second call all within it.
    const deadline = ctx.deadline ?? now() + opts.requestDeadlineMs
    return await withToken(appId, secret, withDeadline(ctx, deadline), async (accessToken) =>
      await opts.wechat.fetchPhoneNumber(accessToken, code, { deadline }))
  }

  return { appOf, phoneNumber }
}

export type PhoneService = ReturnType<typeof createPhoneService>
