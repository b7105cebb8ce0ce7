/**
 * WeCom's JS-SDK tickets, each a credential on the shared lifecycle (store and hot cache, one fetch per herd over
 * every instance, served while it lasts when a fetch fails, an hourly budget, remembered refusals, backoff), fetched
 * with an application's token by the refresh-once rule (src/tokens/with-token.ts):
 * - the corp's ticket (get_jsapi_ticket, for wx.config), one per corp, whichever configured application asks for it;
 * - an application's ticket (ticket/get?type=agent_config, for wx.agentConfig), one per application, kept beside the
 *   application's token under the same opaque owner, so no two applications of a corp ever share or overwrite one.
 * Only the applications of WECOM_APPS are served: the secret a caller sends must be one of them (checked in constant
 * time before anything else), and the agentId, when sent, that application's.
 */
import { AppError } from '../errors.js'
import { fingerprint } from '../fingerprint.js'
import { wecomTicketCredential, type WecomTicketType } from '../tokens/credential.js'
import { configuredOnly, createGuards } from '../tokens/guards.js'
import { createLifecycle, type Lifecycle, type Source } from '../tokens/lifecycle.js'
import { withDeadline, type CallContext } from '../tokens/refresher.js'
import type { ServedToken } from '../tokens/rules.js'
import { createTokenCaller } from '../tokens/with-token.js'
import type { AttemptControl, FetchedToken } from '../wechat/client.js'
import { WechatApiError } from '../wechat/errcodes.js'
import { jssdkSignature, nonce } from '../wechat/jssdk.js'
import type { WecomApplication, WecomServiceOptions, WecomTokenService } from './token-service.js'

export interface WecomTicketServiceOptions extends WecomServiceOptions {
  tokens: WecomTokenService
  corpHourlyBudget: number
  agentHourlyBudget: number
}

/** What wx.config (the corp ticket) or wx.agentConfig (an application's) needs to be signed. */
export interface WecomSignature {
  corpId: string
  /** The application, for wx.agentConfig. */
  agentId?: string
  timestamp: number
  nonceStr: string
  signature: string
}

/** Owners whose last served ticket is kept in process, to answer while the store is down. */
const OUTAGE_COPIES = 10_000
/** As the WeCom token: a ticket is served to its last seconds and fetched once it ends (see src/wecom/token-service.ts). */
const WECOM_SERVE_MARGIN_MS = 5_000
/**
 * Where WeCom's refusal of an application's IP on the corp ticket call is remembered: under that application's owner.
 * WeCom's trusted IPs are set per application, so the refusal says nothing of the corp's other applications.
 */
const CORP_REFUSED = 'wecom_corp_ticket:negative-by-application'

/** The message of a remembered refusal, or undefined when absent or unreadable (a corrupted value is forgotten). */
function rememberedRefusal (raw: string | null): { message: string, errcode: number | undefined } | undefined {
  if (raw === null) return undefined
  try {
    const record = JSON.parse(raw) as { message?: unknown, errcode?: unknown } | null
    if (typeof record?.message !== 'string') return undefined
    return { message: record.message, errcode: typeof record.errcode === 'number' && Number.isSafeInteger(record.errcode) ? record.errcode : undefined }
  } catch {
    return undefined
  }
}

export function createWecomTicketService (opts: WecomTicketServiceOptions) {
  const { tokens, wecom, store } = opts
  const now = opts.now ?? Date.now
  const withToken = createTokenCaller(tokens, now)
  const guards = createGuards(store, configuredOnly(opts.negativeCacheSeconds, now, opts.metrics))
  const lifecycles: Record<WecomTicketType, Lifecycle> = {
    corp: lifecycleOf('corp'),
    // An application's ticket is made with its token, under the same owner: served only while the token's entry is
    // this secret's, and forgotten by the hot cache when the token changes.
    agent: lifecycleOf('agent', tokens.credential)
  }
  /**
   * The corp ticket is the corp's, whichever configured application fetched it: its entry carries a fingerprint of the
   * corp (not of a secret), and the caller's secret is checked against WECOM_APPS before the lifecycle is asked.
   */
  const corpMarks = new Map<string, string>()
  const corpMark = (corpId: string): string => {
    let mark = corpMarks.get(corpId)
    if (mark === undefined) corpMarks.set(corpId, mark = fingerprint(corpId, '\0corp ticket', opts.fingerprintKey))
    return mark
  }

  function lifecycleOf (type: WecomTicketType, madeWith?: WecomTokenService['credential']): Lifecycle {
    return createLifecycle({
      credential: wecomTicketCredential(type, type === 'corp' ? opts.corpHourlyBudget : opts.agentHourlyBudget),
      ...(madeWith ? { madeWith } : {}),
      store,
      guards,
      marginMs: WECOM_SERVE_MARGIN_MS,
      // Whether WeCom answers a new ticket when asked before the served one ends is not documented: nothing is
      // fetched ahead, which at worst costs one wait when a ticket ends.
      aheadMs: 0,
      requestDeadlineMs: opts.requestDeadlineMs,
      lockLeaseMs: opts.lockLeaseMs,
      hotMs: opts.hotCacheMs,
      hotMax: opts.hotCacheMaxApps,
      copiesMax: OUTAGE_COPIES,
      metrics: opts.metrics,
      now
    })
  }

  /** The application of the secret, and the agentId it must be when one was sent (SECRET_MISMATCH otherwise). */
  function admit (corpId: string, secret: string, agentId: string | undefined): WecomApplication {
    const application = tokens.admit(corpId, secret)
    if (agentId !== undefined && agentId !== application.agentId) {
      throw new AppError('SECRET_MISMATCH', `corpSecret is not the secret of application ${agentId} of corpId ${corpId} in WECOM_APPS`)
    }
    return application
  }

  /** Where a ticket of this type lives: its owner, and the fingerprint and secret its entries are served to. */
  function slotOf (corpId: string, application: WecomApplication, type: WecomTicketType): { owner: string, fp: string, secret: string } {
    if (type === 'agent') return { owner: application.owner, fp: application.fp, secret: application.secret }
    const mark = corpMark(corpId)
    return { owner: corpId, fp: mark, secret: mark }
  }

  function sourceFor (corpId: string, secret: string, type: WecomTicketType, ctx: CallContext): Source {
    const fetchWith = async (control: AttemptControl, deadline: number) =>
      await withToken(corpId, secret, ctx, async (accessToken) => await wecom.fetchWecomTicket(accessToken, type, { ...control, deadline }))
    return {
      // The secret is a configured one (admitted before): the token is made ready before the ticket's lock is taken.
      async verified () {
        await tokens.getToken(corpId, secret, ctx)
        return true
      },
      fetch: (deadline) => async (control) =>
        type === 'corp' ? await byApplication(corpId, secret, tokens.admit(corpId, secret), async () => await fetchWith(control, deadline)) : await fetchWith(control, deadline)
    }
  }

  /**
   * The corp ticket's call made with one application's token. What WeCom refuses the application for is the
   * application's, not the corp's. Its IP (60020): remembered for that application alone, and not handed to the corp
   * ticket's guards, which would refuse the corp ticket to every application of the corp meanwhile. While such a
   * refusal is remembered, the application's requests make no call (nor spend the corp's hourly budget); another
   * application's fetch serves it.
   */
  async function byApplication (corpId: string, secret: string, application: WecomApplication, call: () => Promise<FetchedToken>): Promise<FetchedToken> {
    const remembered = rememberedRefusal(await store.getValue(application.owner, CORP_REFUSED))
    if (remembered !== undefined) {
      throw new AppError('WECHAT_IP_NOT_ALLOWED', `${remembered.message} (remembered for this application; WeChat is not asked again for a while)`,
        { wechatErrcode: remembered.errcode })
    }
    // Likewise a token WeCom refused again after it was replaced: each call made with it would spend the corp's
    // hourly budget on a refusal, and another application's request fetches the corp ticket meanwhile.
    if (await tokens.refusedAgainRecently(corpId, secret)) {
      throw new AppError('WECHAT_TOKEN_REFUSED', 'WeCom refused this application\'s token again after it was replaced a short while ago; ' +
        'the corp ticket is not asked for with it for now')
    }
    try {
      return await call()
    } catch (err) {
      if (!(err instanceof WechatApiError) || err.kind !== 'WECHAT_IP_NOT_ALLOWED') throw err
      if (opts.negativeCacheSeconds > 0) {
        await store.setValue(application.owner, CORP_REFUSED, JSON.stringify({ message: err.message, errcode: err.errcode }), opts.negativeCacheSeconds * 1000).catch(() => {})
      }
      throw new AppError(err.kind, err.message, { wechatErrcode: err.errcode })
    }
  }

  /** The hot-cache answer, synchronously, for a configured secret of the corp (and its agentId, when sent). */
  function fromHot (corpId: string, secret: string, type: WecomTicketType, agentId?: string): ServedToken | undefined {
    const application = tokens.applicationOf(corpId, secret)
    if (application === undefined || (agentId !== undefined && agentId !== application.agentId)) return undefined
    const slot = slotOf(corpId, application, type)
    return lifecycles[type].fromHot(slot.owner, slot.secret)
  }

  /** The ticket of this type for the application whose secret this is, for a caller that looked in the hot cache already. */
  async function afterHotMiss (corpId: string, secret: string, type: WecomTicketType, agentId: string | undefined, ctx: CallContext): Promise<ServedToken> {
    const application = admit(corpId, secret, agentId)
    const slot = slotOf(corpId, application, type)
    // One deadline for the request: the token, the ticket call, a replaced token and the second ticket call.
    const scoped = withDeadline(ctx, ctx.deadline ?? now() + opts.requestDeadlineMs)
    return await lifecycles[type].afterHotMiss(slot.owner, slot.secret, slot.fp, sourceFor(corpId, secret, type, scoped), scoped)
  }

  /** Signs a page url with a ticket in hand: the fields wx.config (corp) or wx.agentConfig (agent) takes. */
  function signed (corpId: string, secret: string, type: WecomTicketType, ticket: ServedToken, url: string): WecomSignature {
    const timestamp = Math.floor(now() / 1000)
    const nonceStr = nonce()
    const signature = jssdkSignature(ticket.accessToken, nonceStr, timestamp, url)
    if (type === 'corp') return { corpId, timestamp, nonceStr, signature }
    // The secret was admitted to get the ticket: it is a configured application's.
    return { corpId, agentId: tokens.applicationOf(corpId, secret)!.agentId, timestamp, nonceStr, signature }
  }

  /** Each owner and ticket type this instance has served, with the ticket's expiry (for the seconds-left gauge). */
  function known (): Array<[string, string, number]> {
    return Object.values(lifecycles).flatMap((lifecycle) =>
      lifecycle.known().map(([owner, expiresAt]): [string, string, number] => [owner, lifecycle.credential.name, expiresAt]))
  }

  async function close (): Promise<void> {
    await Promise.all(Object.values(lifecycles).map(async (lifecycle) => { await lifecycle.close() }))
  }

  return { fromHot, afterHotMiss, signed, known, close }
}

export type WecomTicketService = ReturnType<typeof createWecomTicketService>
