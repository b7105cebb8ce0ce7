/**
 * The token service's entry points: a token request, a report of a token WeChat refused, and the scheduler's
 * proactive refresh. The access token follows the lifecycle every credential follows (src/tokens/lifecycle.ts); what
 * is its own: a secret is checked against the configured one or verified by WeChat, a reported token is replaced only
 * while it is still the current one, and while the store is down a cold app is fetched directly in stable mode, under
 * guards of its own kept in process.
 */
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { createFingerprintCache, fingerprint, sameString } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import { createMemoryStore } from '../store/memory-store.js'
import { fetchedEntry, type TokenEntry, type TokenStore } from '../store/types.js'
import { accessTokenCredential } from '../tokens/credential.js'
import { createGuards, type GuardOptions } from '../tokens/guards.js'
import { createLifecycle, type Source } from '../tokens/lifecycle.js'
import type { CallContext, Need } from '../tokens/refresher.js'
import { served, usable, type ServedToken } from '../tokens/rules.js'
import type { RefreshOutcome } from '../tokens/with-token.js'
import type { WechatClient } from '../wechat/client.js'

export { beijingDay, type ServedToken } from '../tokens/rules.js'
export type { CallContext } from '../tokens/refresher.js'
export type { RefreshOutcome } from '../tokens/with-token.js'

export interface TokenServiceOptions {
  store: TokenStore
  wechat: WechatClient
  serveMarginSeconds: number
  refreshAheadSeconds: number
  requestDeadlineMs: number
  lockLeaseMs: number
  negativeCacheSeconds: number
  dailyUpstreamBudget: number
  forceRefreshDailyLimit: number
  forceRefreshMinIntervalSeconds: number
  /** Checks of secrets not yet known to be right: per caller per app, per caller, in each window; per app per day. */
  unverifiedChecksPerApp: number
  unverifiedChecksPerCaller: number
  unverifiedCheckWindowSeconds: number
  unverifiedDailyBudget: number
  /** How long a served token is answered from process memory; 0: never. */
  hotCacheMs?: number
  hotCacheMaxApps?: number
  metrics?: Metrics
  /** WECHAT_APPS: when given, only these appIds are served, each with its configured secret. */
  apps?: ReadonlyMap<string, string>
  /** The key of the secret fingerprints (FINGERPRINT_KEY). */
  fingerprintKey?: string | undefined
  now?: () => number
}

/** Apps whose last served credential is kept in process, to answer while the store is down. */
export const OUTAGE_COPIES = 10_000

/** WeChat AppIDs are lower-case; an upper-case spelling names the same app. */
export function normalized (appId: string): string {
  return /[A-F]/.test(appId) ? appId.toLowerCase() : appId
}

export function createTokenService (opts: TokenServiceOptions) {
  const { store, wechat, metrics } = opts
  const now = opts.now ?? Date.now
  const marginMs = opts.serveMarginSeconds * 1000
  const hotMax = opts.hotCacheMaxApps ?? 10_000
  const fingerprintOf = createFingerprintCache(hotMax, opts.fingerprintKey)
  const configured = new Map<string, string>()
  for (const [appId, secret] of opts.apps ?? []) configured.set(appId, fingerprint(appId, secret, opts.fingerprintKey))

  const credential = accessTokenCredential(wechat.mode, opts.dailyUpstreamBudget)
  const guardOptions: GuardOptions = {
    negativeCacheSeconds: opts.negativeCacheSeconds,
    forceRefreshDailyLimit: opts.forceRefreshDailyLimit,
    forceRefreshMinIntervalSeconds: opts.forceRefreshMinIntervalSeconds,
    unverifiedPerApp: opts.unverifiedChecksPerApp,
    unverifiedPerCaller: opts.unverifiedChecksPerCaller,
    unverifiedWindowSeconds: opts.unverifiedCheckWindowSeconds,
    unverifiedDailyBudget: opts.unverifiedDailyBudget,
    now,
    metrics
  }
  const guards = createGuards(store, guardOptions)
  /**
   * While the store is down: the same guards, their state kept in process (bounded), but for the per-app allowance of
   * unverified checks. An instance that never served an app cannot tell its owner's secret from a stranger's, so
   * strangers could use that allowance up and lock the owner out; the per-caller limits still bound each caller, and
   * only stable mode fetches while the store is down, where WeChat allows 500,000 calls a day.
   */
  const outageState = createMemoryStore(now, { maxValues: 10_000 })
  const outageGuards = createGuards(outageState, { ...guardOptions, unverifiedDailyBudget: Number.MAX_SAFE_INTEGER })
  const lifecycle = createLifecycle({
    credential,
    store,
    guards,
    marginMs,
    aheadMs: opts.refreshAheadSeconds * 1000,
    requestDeadlineMs: opts.requestDeadlineMs,
    lockLeaseMs: opts.lockLeaseMs,
    hotMs: opts.hotCacheMs ?? 0,
    hotMax,
    copiesMax: OUTAGE_COPIES,
    metrics,
    now
  })
  const { caches, refresher } = lifecycle

  /** The app's fingerprint of this secret, once the app is known to be served and the secret the configured one. */
  function admit (appId: string, secret: string): string {
    const fp = fingerprintOf(appId, secret)
    if (!opts.apps) return fp
    const expected = configured.get(appId)
    if (expected === undefined) throw new AppError('APP_NOT_CONFIGURED', `appId ${appId} is not one of the configured WECHAT_APPS`)
    if (!sameString(expected, fp)) throw new AppError('SECRET_MISMATCH', 'appSecret does not match the configured secret for this appId')
    return fp
  }

  /** How the access token of appId is fetched with this secret. */
  function sourceFor (appId: string, secret: string, fp: string, ctx: CallContext): Source {
    return {
      verified: async (cached) => await isVerified(appId, fp, cached),
      fetch: (deadline, forced) => async (control) => await wechat.fetchToken(appId, secret, { ...control, deadline, forceRefresh: forced }),
      outage: async () => await directFetch(appId, secret, fp, ctx)
    }
  }

  /** The secret is known to be right: configured, the stored token's, this instance's copy's, or accepted by WeChat before. */
  async function isVerified (appId: string, fp: string, cached: TokenEntry | null): Promise<boolean> {
    return opts.apps !== undefined || sameString(cached?.secretFingerprint ?? '', fp) ||
      sameString(caches.copy(appId)?.secretFingerprint ?? '', fp) || await guards.isVerified(appId, fp)
  }

  /**
   * While the store is down and this instance has no usable copy: in stable mode a direct fetch (idempotent, so it
   * cannot break other instances) under process-local guards; in classic mode a refusal (a fetch would retire the
   * token the other instances serve).
   */
  async function directFetch (appId: string, secret: string, fp: string, ctx: CallContext): Promise<ServedToken> {
    if (wechat.mode === 'classic') {
      throw new AppError('STORE_UNAVAILABLE', 'The token store is unavailable, and in classic mode a fetch would invalidate the token other instances serve')
    }
    ctx.log.warn('token store unavailable: fetching directly (stable mode)')
    const verified = opts.apps !== undefined || caches.copy(appId) !== undefined
    const entry = await refresher.shared(`${appId}\0${fp}\0outage`, async () => {
      const known = await outageGuards.remembered(credential, appId, fp, false)
      if (known) throw known
      const deadline = ctx.deadline ?? now() + opts.requestDeadlineMs
      const admission = verified ? undefined : await outageGuards.admitUnverified(credential, appId, ctx.origin, deadline)
      let fetched
      try {
        fetched = await outageGuards.call({ credential, appId, fp, verified, origin: ctx.origin, forced: false }, async (control) =>
          await wechat.fetchToken(appId, secret, { ...control, deadline }))
      } catch (err) {
        await admission?.settle(err)
        throw err
      }
      await admission?.settle(null)
      return fetchedEntry(fetched, wechat.mode, fp, 0)
    })
    caches.keepUnstored(appId, entry)
    return served(entry, now())
  }

  /**
   * The hot-cache answer, synchronously, when there is one for this appId and secret. The appId is looked up as sent
   * (the hot path tests nothing more); an upper-case spelling finds it through afterHotMiss, which normalizes it first.
   */
  const fromHot = lifecycle.fromHot

  /** The token for appId, if appSecret is the right one. */
  async function getToken (anyAppId: string, appSecret: string, ctx: CallContext): Promise<ServedToken> {
    const appId = normalized(anyAppId)
    return fromHot(appId, appSecret) ?? await fromStore(appId, appSecret, ctx)
  }

  /** The token for appId (normalized), past the hot cache. */
  async function fromStore (appId: string, appSecret: string, ctx: CallContext): Promise<ServedToken> {
    const fp = admit(appId, appSecret)
    return await lifecycle.afterHotMiss(appId, appSecret, fp, sourceFor(appId, appSecret, fp, ctx), ctx)
  }

  /**
   * The token for appId, for a caller that looked in the hot cache already under the appId as sent (the route): the
   * hot cache is looked in again only under another spelling.
   */
  async function afterHotMiss (anyAppId: string, appSecret: string, ctx: CallContext): Promise<ServedToken> {
    const appId = normalized(anyAppId)
    return appId === anyAppId ? await fromStore(appId, appSecret, ctx) : await getToken(appId, appSecret, ctx)
  }

  /**
   * "WeChat refused this token": refresh only while it is still the current one, within WeChat's limits. A forced
   * refresh is spent only for the secret of the stored token; with no stored token, the current one is fetched as for
   * any miss (a normal fetch, an unknown secret checked), and forced only if it is the very token reported.
   * `force: false` (calls made with the token): in stable mode a normal fetch, which answers WeChat's current token
   * (another system's forced refresh included) without spending a forced refresh or retiring anyone's token.
   */
  async function refreshReported (anyAppId: string, appSecret: string, reported: string, ctx: CallContext,
    { force = true }: { force?: boolean } = {}, again = false): Promise<RefreshOutcome> {
    const appId = normalized(anyAppId)
    const fp = admit(appId, appSecret)
    const mark = caches.mark()
    const cached = await store.get(appId)
    if (cached === null) {
      const token = await getToken(appId, appSecret, ctx)
      return again || token.accessToken !== reported ? { token } : await refreshReported(appId, appSecret, reported, ctx, { force }, true)
    }
    if (!sameString(cached.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    const need: Need = {
      ...lifecycle.freshNeed(appId, fp, true, sourceFor(appId, appSecret, fp, ctx), ctx, force && wechat.mode === 'stable'),
      reported,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now()) && entry.accessToken !== reported
    }
    try {
      const entry = await refresher.shared(`${appId}\0${fp}\0${reported}`, async () => await refresher.obtain(need, ctx))
      caches.keep(appId, appSecret, entry, mark, false)
      return { token: served(entry, now()) }
    } catch (err) {
      // Not refreshed now (spaced, or the app's fetches backed off): the current token, and why.
      if (err instanceof AppError && (err.kind === 'FORCE_REFRESH_LIMITED' || err.kind === 'UPSTREAM_BACKOFF')) {
        const current = await store.get(appId)
        return { token: usable(current, fp, 0, now()) ? served(current, now()) : null, notice: err }
      }
      throw err
    }
  }

  /** For the scheduler: refresh a configured app when it has no token or its token is due. */
  async function refreshIfDue (appId: string, log: FastifyBaseLogger): Promise<void> {
    const secret = opts.apps?.get(appId)
    const fp = configured.get(appId)
    if (secret === undefined || fp === undefined) return
    await lifecycle.refreshIfDue(appId, fp, sourceFor(appId, secret, fp, { log, origin: 'background' }), true, log)
  }

  /** Stops background refreshes, waiting for those running (before the store closes). */
  async function close (): Promise<void> {
    await lifecycle.close()
    await outageState.close()
  }

  return {
    fromHot,
    getToken,
    afterHotMiss,
    refreshReported,
    refreshIfDue,
    /** The app's fingerprint of a secret, once checked against WECHAT_APPS (APP_NOT_CONFIGURED, SECRET_MISMATCH). */
    admit,
    /** The configured secret of an app of WECHAT_APPS (kept in process memory only), or undefined. */
    configuredSecret: (appId: string): string | undefined => opts.apps?.get(appId),
    refusedAgainRecently: async (appId: string) => await guards.refusedAgainRecently(normalized(appId)),
    rememberRefusedAgain: async (appId: string, _secret: string, message: string) => { await guards.rememberRefusedAgain(normalized(appId), message) },
    credential,
    known: lifecycle.known,
    close
  }
}

export type TokenService = ReturnType<typeof createTokenService>
