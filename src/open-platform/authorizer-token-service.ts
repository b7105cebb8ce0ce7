/**
 * The authorizer_access_token of each account that authorized a component of WECHAT_COMPONENTS, kept by the same
 * lifecycle as every credential (hot cache, store, one fetch per herd over every instance, refresh ahead, outage
 * copies, a daily budget, backoff). Its owner is the authorizer's space (`_authorizer:<component>:<authorizer>`). It is
 * fetched with the component's cached token and the authorizer's refresh token (refresh-tokens.ts), which is recovered
 * from WeChat's authorizer list when no store or instance holds it: an account is never failed for a lost store.
 *
 * An authorization arrives as a code (the `authorized` event's, or the redirect's), exchanged here once (api_query_auth)
 * for the refresh token and a first token; the `unauthorized` event removes both.
 */
import { hash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { fetchedEntry, stampOf, type TokenEntry } from '../store/types.js'
import { authorizerTokenCredential } from '../tokens/credential.js'
import type { Source } from '../tokens/lifecycle.js'
import { withDeadline, type CallContext } from '../tokens/refresher.js'
import { beijingDay, served, type ServedToken } from '../tokens/rules.js'
import type { RefreshOutcome } from '../tokens/with-token.js'
import type { AuthorizerToken, FetchedToken, FetchOptions } from '../wechat/client.js'
import { WechatApiError } from '../wechat/errcodes.js'
import { componentKind, type ComponentKindOptions } from './component-kind.js'
import type { ComponentTokenService } from './component-token-service.js'
import { authorizerOf, authorizerSpace, type ListPage, type RefreshTokens } from './refresh-tokens.js'
import { componentSpace } from './verify-tickets.js'

export interface AuthorizerTokenServiceOptions extends ComponentKindOptions {
  componentTokens: ComponentTokenService
  refreshTokens: RefreshTokens
}

/** How long an exchanged authorization code is remembered (WeChat's codes live 10 minutes). */
const CODE_MEMORY_MS = 15 * 60_000
const PENDING = '-'
const codeName = (code: string): string => `auth_code:${hash('sha256', code, 'hex').slice(0, 32)}`
const exchangeSubject = (componentAppId: string): string => `authorization|${componentAppId}`

export interface Authorization extends ServedToken {
  authorizerAppId: string
}

export function createAuthorizerTokenService (opts: AuthorizerTokenServiceOptions) {
  const { store, wechat, componentTokens, refreshTokens, metrics } = opts
  const credential = authorizerTokenCredential(opts.dailyBudget)
  const { now, fps, engine, lifecycle, admit } = componentKind(opts, credential, 10_000)

  /**
   * The authorizer's refresh token from WeChat's list (refresh-tokens.ts). The component's token is got first: without
   * one (no ticket yet), that is the answer, and the list is not marked as failed for every authorizer.
   */
  async function recover (componentAppId: string, authorizerAppId: string, ctx: CallContext, deadline: number, refused?: string): Promise<string> {
    const token = await componentTokens.getToken(componentAppId, withDeadline(ctx, deadline))
    const page: ListPage = async (offset, count) => await wechat.listAuthorizers(componentAppId, token.accessToken, offset, count, { deadline })
    return await refreshTokens.recover(componentAppId, authorizerAppId, page, deadline, refused)
  }

  /** api_authorizer_token with this refresh token; a new refresh token answered is saved before the token is used. */
  async function fetchWith (componentAppId: string, authorizerAppId: string, refreshToken: string, ctx: CallContext,
    control: Omit<FetchOptions, 'forceRefresh'>): Promise<AuthorizerToken> {
    const componentToken = await componentTokens.getToken(componentAppId, withDeadline(ctx, control.deadline))
    const got = await wechat.fetchAuthorizerToken(componentAppId, componentToken.accessToken, authorizerAppId, refreshToken, control)
    if (got.refreshToken !== refreshToken) {
      await refreshTokens.save(componentAppId, authorizerAppId, got.refreshToken)
      metrics?.authorizerRefreshTokens.labels('rotated').inc()
      ctx.log.info({ componentAppId, authorizerAppId }, 'WeChat answered a new authorizer refresh token: saved before use')
    }
    return got
  }

  /**
   * One fetch of an authorizer's token: with the refresh token held (else recovered from WeChat's list). One WeChat
   * refuses (61023) is replaced from the list, once; when the list holds no other, it is marked refused until the list
   * may be read again, and the account is answered AUTHORIZER_NOT_AUTHORIZED without WeChat meanwhile.
   */
  async function fetchAuthorizer (componentAppId: string, authorizerAppId: string, ctx: CallContext,
    control: Omit<FetchOptions, 'forceRefresh'>): Promise<FetchedToken> {
    const { deadline } = control
    let refreshToken = await refreshTokens.get(componentAppId, authorizerAppId) ?? await recover(componentAppId, authorizerAppId, ctx, deadline)
    if (await refreshTokens.isRefused(componentAppId, authorizerAppId, refreshToken)) {
      refreshToken = await recover(componentAppId, authorizerAppId, ctx, deadline, refreshToken)
    }
    try {
      return await fetchWith(componentAppId, authorizerAppId, refreshToken, ctx, control)
    } catch (err) {
      if (!(err instanceof WechatApiError && err.errcode === 61023)) throw err
      let replacement: string
      try {
        replacement = await recover(componentAppId, authorizerAppId, ctx, deadline, refreshToken)
      } catch (recovery) {
        if (recovery instanceof AppError && recovery.kind === 'AUTHORIZER_NOT_AUTHORIZED') {
          await refreshTokens.markRefused(componentAppId, authorizerAppId, refreshToken)
          metrics?.authorizerRefreshTokens.labels('not_authorized').inc()
          ctx.log.warn({ componentAppId, authorizerAppId }, 'WeChat refused the authorizer refresh token (61023) and its authorizer list holds no other')
        }
        throw recovery
      }
      return await fetchWith(componentAppId, authorizerAppId, replacement, ctx, control)
    }
  }

  function sourceFor (componentAppId: string, authorizerAppId: string, owner: string, fp: string, ctx: CallContext): Source {
    return {
      verified: async () => true,
      fetch: (deadline) => async (control) => await fetchAuthorizer(componentAppId, authorizerAppId, ctx, { ...control, deadline }),
      outage: async () => await engine.directFetch(owner, fp, ctx, async (control) => await fetchAuthorizer(componentAppId, authorizerAppId, ctx, control))
    }
  }

  /** The hot-cache answer, synchronously. */
  function fromHot (componentAppId: string, authorizerAppId: string): ServedToken | undefined {
    const component = opts.components.get(componentAppId)
    return component === undefined ? undefined : lifecycle.fromHot(authorizerSpace(componentAppId, authorizerAppId), component.appSecret)
  }

  /** The authorizer's token, for a caller that looked in the hot cache already (the route). */
  async function afterHotMiss (componentAppId: string, authorizerAppId: string, ctx: CallContext): Promise<ServedToken> {
    const { component, fp } = admit(componentAppId)
    const owner = authorizerSpace(componentAppId, authorizerAppId)
    return await lifecycle.afterHotMiss(owner, component.appSecret, fp, sourceFor(componentAppId, authorizerAppId, owner, fp, ctx), ctx)
  }

  /**
   * WeChat refused this authorizer's token on a call made with it (getticket: 40001, 42001): fetched again, only while
   * it is still the stored one (src/tokens/with-token.ts). `componentAppId` and `authorizerAppId` stand where an Official
   * Account's appId and secret stand in the refresh-once rule.
   */
  async function refreshReported (componentAppId: string, authorizerAppId: string, reported: string, ctx: CallContext): Promise<RefreshOutcome> {
    const { component, fp } = admit(componentAppId)
    const owner = authorizerSpace(componentAppId, authorizerAppId)
    return await engine.refreshReported(owner, component.appSecret, fp, reported, sourceFor(componentAppId, authorizerAppId, owner, fp, ctx), ctx)
  }

  /** A token WeChat issued outside a refresh (api_query_auth): stored as the authorizer's current one, and announced. */
  async function storeIssued (owner: string, fp: string, got: FetchedToken): Promise<TokenEntry> {
    for (let tries = 0; tries < 4; tries++) {
      const generation = await store.generation(owner)
      const entry = fetchedEntry(got, credential.mode, fp, generation + 1)
      if (await store.compareAndSet(owner, entry, generation)) {
        await store.notify(credential.subject(owner), stampOf(entry)).catch(() => {})
        return entry
      }
    }
    return fetchedEntry(got, credential.mode, fp, 0)
  }

  /**
   * An authorization code (the `authorized` event's, or the authorization redirect's) exchanged for the authorizer's
   * refresh token and token (api_query_auth), once across instances: the same code again (the event and the redirect
   * both carry it) is answered with the authorizer's token, without WeChat. A code WeChat pushed (`pushed`: its
   * signature checked) is not counted against the budget of codes callers send: they cannot make it fail.
   */
  async function exchange (componentAppId: string, code: string, ctx: CallContext, pushed = false): Promise<Authorization> {
    const { fp } = admit(componentAppId)
    const space = componentSpace(componentAppId)
    const name = codeName(code)
    const deadline = ctx.deadline ?? now() + opts.requestDeadlineMs
    const mine = await store.acquire(space, name, PENDING, CODE_MEMORY_MS).catch(() => true)
    if (!mine) {
      for (;;) {
        const authorizerAppId = await store.getValue(space, name)
        if (authorizerAppId === null) throw new AppError('AUTHORIZATION_CODE_INVALID', 'This authorization code could not be exchanged: ask the account to authorize again')
        if (authorizerAppId !== PENDING) {
          const token = fromHot(componentAppId, authorizerAppId) ?? await afterHotMiss(componentAppId, authorizerAppId, ctx)
          return { ...token, authorizerAppId }
        }
        if (now() >= deadline) throw new AppError('REFRESH_IN_PROGRESS', 'Another instance is exchanging this authorization code')
        await store.waitForChange(exchangeSubject(componentAppId), Math.min(1000, deadline - now()))
      }
    }
    let got: AuthorizerToken
    try {
      // Each code a caller sends is a call to WeChat: bounded per component and day, whatever the callers.
      const used = pushed ? 0 : await store.increment(space, `query_auth:${beijingDay(now())}`, 2 * 24 * 3600_000).catch(() => 0)
      if (used > opts.dailyBudget) {
        throw new AppError('DAILY_BUDGET_EXHAUSTED', `Component ${componentAppId} used its COMPONENT_DAILY_BUDGET of api_query_auth calls today`)
      }
      const componentToken = await componentTokens.getToken(componentAppId, withDeadline(ctx, deadline))
      got = await wechat.queryAuth(componentAppId, componentToken.accessToken, code, { deadline })
    } catch (err) {
      await store.forget(space, name).catch(() => {})
      await store.notify(exchangeSubject(componentAppId)).catch(() => {})
      throw err
    }
    const { authorizerAppId } = got
    await refreshTokens.save(componentAppId, authorizerAppId, got.refreshToken)
    const owner = authorizerSpace(componentAppId, authorizerAppId)
    const entry = await storeIssued(owner, fp, got).catch(() => fetchedEntry(got, credential.mode, fp, 0))
    // Counted once the exchange is complete (refresh token and token kept): what a watcher of it may rely on.
    metrics?.authorizerRefreshTokens.labels('authorized').inc()
    await store.setValue(space, name, authorizerAppId, CODE_MEMORY_MS).catch(() => {})
    await store.notify(exchangeSubject(componentAppId)).catch(() => {})
    ctx.log.info({ componentAppId, authorizerAppId }, 'an authorization was exchanged: the authorizer\'s refresh token is kept')
    return { ...served(entry, now()), authorizerAppId }
  }

  /** The authorization ended (`unauthorized`): its refresh token and token are removed here, in the store and everywhere. */
  async function revoke (componentAppId: string, authorizerAppId: string): Promise<void> {
    admit(componentAppId)
    const owner = authorizerSpace(componentAppId, authorizerAppId)
    await refreshTokens.remove(componentAppId, authorizerAppId)
    await store.delete(owner)
    metrics?.authorizerRefreshTokens.labels('removed').inc()
    await store.notify(credential.subject(owner)).catch(() => {})
  }

  /**
   * For the scheduler: refresh an authorizer's token when it is due (one that was never fetched, or has expired, waits
   * for its first caller).
   */
  async function refreshIfDue (owner: string, log: FastifyBaseLogger): Promise<void> {
    for (const componentAppId of opts.components.keys()) {
      const authorizerAppId = authorizerOf(owner, componentAppId)
      if (authorizerAppId === undefined) continue
      const fp = fps.get(componentAppId)!
      const ctx: CallContext = { log, origin: 'background' }
      await lifecycle.refreshIfDue(owner, fp, sourceFor(componentAppId, authorizerAppId, owner, fp, ctx), false, log)
    }
  }

  return {
    credential,
    refreshIfDue,
    /** The authorizers this instance holds a refresh token of (what the scheduler keeps fresh), read anew each time. */
    owners: { [Symbol.iterator]: () => refreshTokens.spaces() } satisfies Iterable<string>,
    fromHot,
    afterHotMiss,
    getToken: async (componentAppId: string, authorizerAppId: string, ctx: CallContext) =>
      fromHot(componentAppId, authorizerAppId) ?? await afterHotMiss(componentAppId, authorizerAppId, ctx),
    exchange,
    /** The authorizer's refresh token kept here (refresh-tokens.ts `get`), or undefined when none is held. */
    refreshToken: async (componentAppId: string, authorizerAppId: string): Promise<string | undefined> =>
      await refreshTokens.get(componentAppId, authorizerAppId),
    revoke,
    /** The configured component (APP_NOT_CONFIGURED otherwise) and its secret's fingerprint, which its authorizers' entries carry. */
    admit,
    refreshReported,
    refusedAgainRecently: async (componentAppId: string, authorizerAppId: string) =>
      await engine.guards.refusedAgainRecently(authorizerSpace(componentAppId, authorizerAppId)),
    rememberRefusedAgain: async (componentAppId: string, authorizerAppId: string, message: string) => {
      await engine.guards.rememberRefusedAgain(authorizerSpace(componentAppId, authorizerAppId), message)
    },
    known: lifecycle.known,
    close: engine.close
  }
}

export type AuthorizerTokenService = ReturnType<typeof createAuthorizerTokenService>
