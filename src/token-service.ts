/**
 * The token service's entry points: a token request, a report of a token WeChat refused, and the scheduler's
 * proactive refresh. A token is answered from the hot cache, else from the store while it has life left, else by one
 * refresh shared by every caller (src/tokens/refresher.ts) under the guards (src/tokens/guards.ts); while the store
 * is down, from this instance's copies (src/tokens/local-caches.ts) and, in stable mode, by a direct fetch under
 * guards of its own, kept in process.
 */
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from './errors.js'
import { createFingerprintCache, fingerprint, sameString } from './fingerprint.js'
import type { Metrics } from './metrics.js'
import { createMemoryStore } from './store/memory-store.js'
import { StoreError, stampOf, tokenEntry, type TokenEntry, type TokenStore } from './store/types.js'
import { createGuards } from './tokens/guards.js'
import { createLocalCaches } from './tokens/local-caches.js'
import { createRefresher, type CallContext, type Need } from './tokens/refresher.js'
import { refreshDue, served, usable, type ServedToken } from './tokens/rules.js'
import type { WechatClient } from './wechat/client.js'

export { beijingDay, type ServedToken } from './tokens/rules.js'
export type { CallContext } from './tokens/refresher.js'

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

/** A refresh the caller asked for: the token to use now, and why it is not a new one when it is not. */
export interface RefreshOutcome {
  token: ServedToken | null
  notice?: AppError
}

/** Apps whose last served token is kept in process, to answer while the store is down. */
const OUTAGE_COPIES = 10_000
/** How long a copy waits to be put back for the change messages to resume after Redis came back. */
const PUBSUB_WAIT_MS = 2000

/** WeChat AppIDs are lower-case; an upper-case spelling names the same app. */
function normalized (appId: string): string {
  return /[A-F]/.test(appId) ? appId.toLowerCase() : appId
}

export function createTokenService (opts: TokenServiceOptions) {
  const { store, wechat, metrics } = opts
  const now = opts.now ?? Date.now
  const marginMs = opts.serveMarginSeconds * 1000
  const aheadMs = opts.refreshAheadSeconds * 1000
  const hotMs = opts.hotCacheMs ?? 0
  const hotMax = opts.hotCacheMaxApps ?? 10_000
  const fingerprintOf = createFingerprintCache(hotMax, opts.fingerprintKey)
  const configured = new Map<string, string>()
  for (const [appId, secret] of opts.apps ?? []) configured.set(appId, fingerprint(appId, secret, opts.fingerprintKey))

  const caches = createLocalCaches({ hotMs, hotMax, copiesMax: OUTAGE_COPIES, marginMs, now })
  store.onChange((appId, stamp) => caches.changed(appId, stamp))
  store.onPubsub((up, missed) => caches.pubsub(up, missed))
  const guardOptions = {
    negativeCacheSeconds: opts.negativeCacheSeconds,
    dailyUpstreamBudget: opts.dailyUpstreamBudget,
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
  const refresher = createRefresher({ store, wechat, guards, lockLeaseMs: opts.lockLeaseMs, now, metrics })

  function checkConfigured (appId: string, fp: string): void {
    if (!opts.apps) return
    const expected = configured.get(appId)
    if (expected === undefined) throw new AppError('APP_NOT_CONFIGURED', `appId ${appId} is not one of the configured WECHAT_APPS`)
    if (!sameString(expected, fp)) throw new AppError('SECRET_MISMATCH', 'appSecret does not match the configured secret for this appId')
  }

  /** A refresh that is met by any entry for this secret with more than the serving margin left. */
  function freshNeed (appId: string, secret: string, fp: string, verified: boolean): Need {
    return {
      appId,
      secret,
      fp,
      verified,
      deadline: now() + opts.requestDeadlineMs,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now())
    }
  }

  /** A refresh ahead of expiry (the secret is the served token's, so verified): met only by an entry not yet due. */
  function aheadNeed (appId: string, secret: string, fp: string): Need {
    return {
      ...freshNeed(appId, secret, fp, true),
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now()) && !refreshDue(entry, aheadMs, now())
    }
  }

  /**
   * After the store lost everything (a Redis restart without persistence, a flush), put back this instance's copy of
   * a still-valid token instead of fetching: in classic mode a fetch would retire the token every instance serves.
   * (In stable mode a fetch returns the same token, so nothing is put back: a copy can only be as good as a fetch.)
   * Only a copy no change message can have superseded unheard, and only over generation 0, so it never replaces
   * anything another instance wrote since.
   */
  async function restoreCopy (appId: string, fp: string, ctx: CallContext): Promise<TokenEntry | null> {
    if (wechat.mode !== 'classic' || !usable(caches.copy(appId), fp, marginMs, now())) return null
    // Redis back, its subscriber not yet: whether a change was missed is known once it is (a short wait, once).
    await caches.untilPubsub(PUBSUB_WAIT_MS)
    const copy = caches.restorable(appId)
    if (!usable(copy, fp, marginMs, now()) || await store.generation(appId) !== 0) return null
    const entry = tokenEntry({ ...copy, generation: 1 })
    if (!await store.compareAndSet(appId, entry, 0)) return null
    ctx.log.info('the token store had lost this app\'s token; restored from this instance\'s copy')
    // Waiters poll; a failed announcement only delays them.
    await store.notify(appId, stampOf(entry)).catch(() => {})
    return entry
  }

  /** The secret is known to be right: configured, the stored token's, this instance's copy's, or accepted by WeChat before. */
  async function isVerified (appId: string, fp: string, cached: TokenEntry | null): Promise<boolean> {
    return opts.apps !== undefined || sameString(cached?.secretFingerprint ?? '', fp) ||
      sameString(caches.copy(appId)?.secretFingerprint ?? '', fp) || await guards.isVerified(appId, fp)
  }

  /** A token for a miss: this instance's copy put back into a store that lost it, else a refresh. */
  async function refreshed (appId: string, secret: string, fp: string, cached: TokenEntry | null, ctx: CallContext): Promise<TokenEntry> {
    const restored = cached === null ? await restoreCopy(appId, fp, ctx) : null
    if (restored) return restored
    const verified = await isVerified(appId, fp, cached)
    if (cached !== null && !verified) ctx.log.info('appSecret differs from the cached token\'s; checking it with WeChat')
    return await refresher.shared(`${appId}\0${fp}`, async () => await refresher.obtain(freshNeed(appId, secret, fp, verified), ctx))
  }

  /**
   * While the store is down: the in-process copy for warm apps; for a cold app a direct fetch in stable mode
   * (idempotent, so it cannot break other instances) under process-local guards, and a refusal in classic mode (a
   * fetch would retire the token the other instances serve).
   */
  async function duringOutage (appId: string, secret: string, fp: string, ctx: CallContext): Promise<ServedToken> {
    const copy = caches.copy(appId)
    if (copy && !sameString(copy.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    if (usable(copy, fp, marginMs, now())) {
      metrics?.outageHit.inc()
      return served(copy, now())
    }
    metrics?.outageMiss.inc()
    if (wechat.mode === 'classic') {
      throw new AppError('STORE_UNAVAILABLE', 'The token store is unavailable, and in classic mode a fetch would invalidate the token other instances serve')
    }
    ctx.log.warn('token store unavailable: fetching directly (stable mode)')
    const verified = opts.apps !== undefined || copy !== undefined
    const entry = await refresher.shared(`${appId}\0${fp}\0outage`, async () => {
      const known = await outageGuards.remembered(appId, fp, false)
      if (known) throw known
      if (!verified) await outageGuards.admitUnverified(appId, ctx.origin)
      const fetched = await outageGuards.call({ appId, fp, verified, origin: ctx.origin, forced: false }, async (beforeAttempt) =>
        await wechat.fetchToken(appId, secret, { deadline: now() + opts.requestDeadlineMs, beforeAttempt }))
      return tokenEntry({ ...fetched, mode: wechat.mode, secretFingerprint: fp, fetchedAt: now(), generation: 0 })
    })
    caches.keepUnstored(appId, entry)
    return served(entry, now())
  }

  /**
   * The hot-cache answer, synchronously, when there is one for this appId and secret. The appId is looked up as sent
   * (the hot path tests nothing more); an upper-case spelling finds it through getToken, which normalizes it first.
   */
  function fromHot (appId: string, appSecret: string): ServedToken | undefined {
    const found = caches.hot(appId, appSecret)
    if (found === undefined) return undefined
    metrics?.hotHit.inc()
    return served(found.entry, found.at)
  }

  /** The token for appId, if appSecret is the right one. */
  async function getToken (anyAppId: string, appSecret: string, ctx: CallContext): Promise<ServedToken> {
    const appId = normalized(anyAppId)
    const kept = fromHot(appId, appSecret)
    if (kept) return kept
    if (hotMs > 0) metrics?.hotMiss.inc()
    const fp = fingerprintOf(appId, appSecret)
    checkConfigured(appId, fp)
    const mark = caches.mark()
    let cached: TokenEntry | null
    try {
      cached = await store.get(appId)
    } catch (err) {
      if (err instanceof StoreError) return await duringOutage(appId, appSecret, fp, ctx)
      throw err
    }
    if (usable(cached, fp, marginMs, now())) {
      metrics?.storeHit.inc()
      const due = refreshDue(cached, aheadMs, now())
      caches.keep(appId, appSecret, cached, mark, !due)
      if (due) refresher.inBackground(aheadNeed(appId, appSecret, fp), ctx.log) // never rejects: failures are logged there
      return served(cached, now())
    }
    metrics?.storeMiss.inc()
    try {
      const entry = await refreshed(appId, appSecret, fp, cached, ctx)
      caches.keep(appId, appSecret, entry, mark, true)
      return served(entry, now())
    } catch (err) {
      if (usable(cached, fp, 0, now())) {
        ctx.log.warn({ apiCode: (err as AppError).apiCode }, 'refresh failed; serving the cached token while it lasts')
        return served(cached, now())
      }
      if (err instanceof StoreError) return await duringOutage(appId, appSecret, fp, ctx)
      throw err
    }
  }

  /**
   * "WeChat refused this token": refresh only while it is still the current one, within WeChat's limits. A forced
   * refresh is spent only for the secret of the stored token; with no stored token, the current one is fetched as for
   * any miss (a normal fetch, an unknown secret checked), and forced only if it is the very token reported.
   */
  async function refreshReported (anyAppId: string, appSecret: string, reported: string, ctx: CallContext, again = false): Promise<RefreshOutcome> {
    const appId = normalized(anyAppId)
    const fp = fingerprintOf(appId, appSecret)
    checkConfigured(appId, fp)
    const mark = caches.mark()
    const cached = await store.get(appId)
    if (cached === null) {
      const token = await getToken(appId, appSecret, ctx)
      return again || token.accessToken !== reported ? { token } : await refreshReported(appId, appSecret, reported, ctx, true)
    }
    if (!sameString(cached.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    const need: Need = {
      ...freshNeed(appId, appSecret, fp, true),
      reported,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now()) && entry.accessToken !== reported
    }
    try {
      const entry = await refresher.shared(`${appId}\0${fp}\0${reported}`, async () => await refresher.obtain(need, ctx))
      caches.keep(appId, appSecret, entry, mark, false)
      return { token: served(entry, now()) }
    } catch (err) {
      if (err instanceof AppError && err.kind === 'FORCE_REFRESH_LIMITED') {
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
    const entry = await store.get(appId)
    if (usable(entry, fp, marginMs, now()) && !refreshDue(entry, aheadMs, now())) return
    await refresher.inBackground(aheadNeed(appId, secret, fp), log)
  }

  /** Stops background refreshes, waiting for those running (before the store closes). */
  async function close (): Promise<void> {
    await refresher.drain()
    await outageState.close()
  }

  return { fromHot, getToken, refreshReported, refreshIfDue, known: caches.known, close }
}

export type TokenService = ReturnType<typeof createTokenService>
