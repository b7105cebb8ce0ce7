/**
 * The token lifecycle. Tokens are served from the store while they have life left; a refresh is
 * single-flight in the process (shared promises) and across instances (a lock in the store, and a write
 * that is a compare-and-set on the app's generation, so a holder whose lease ran out cannot overwrite a
 * newer token). Every upstream call passes the quota governor; refused errcodes are remembered.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { ApiCodes } from './api-codes.js'
import { AppError } from './errors.js'
import { createFingerprintCache, fingerprint, sameString } from './fingerprint.js'
import { safeError } from './logger.js'
import type { Metrics } from './metrics.js'
import { tokenEntry, type TokenEntry, type TokenStore } from './store/types.js'
import { WechatApiError } from './wechat/errcodes.js'
import type { WechatClient } from './wechat/client.js'

export interface TokenServiceOptions {
  store: TokenStore
  wechat: WechatClient
  serveMarginSeconds: number
  refreshAheadSeconds: number
  requestDeadlineMs: number
  lockLeaseMs: number
  secretCheckIntervalSeconds: number
  negativeCacheSeconds: number
  dailyUpstreamBudget: number
  forceRefreshDailyLimit: number
  forceRefreshMinIntervalSeconds: number
  /** How long a served token is answered from process memory; 0: never. */
  hotCacheMs?: number
  hotCacheMaxApps?: number
  metrics?: Metrics
  /** WECHAT_APPS: when given, only these appIds are served, each with its configured secret. */
  apps?: ReadonlyMap<string, string>
  now?: () => number
}

export interface ServedToken {
  accessToken: string
  /** Epoch milliseconds. */
  expiresAt: number
  /** Whole seconds left. */
  expiresIn: number
}

/** A refresh the caller asked for: the token to use now, and why it is not a new one when it is not. */
export interface RefreshOutcome {
  token: ServedToken | null
  notice?: AppError
}

export interface CallContext {
  log: FastifyBaseLogger
  caller?: string | undefined
  requestId?: string | undefined
}

interface Need {
  appId: string
  secret: string
  fp: string
  deadline: number
  /** The entry the caller can use, or false when a refresh is needed. */
  satisfied: (entry: TokenEntry | null) => entry is TokenEntry
  /** The token a caller reported as refused by WeChat: refresh only while it is still the current one. */
  reported?: string
}

const LOCK = 'lock'
/** Apps whose last served token is kept in process, to answer while the store is down. */
const OUTAGE_COPIES = 10_000
const POLL_MS = 250
const DAY_MS = 24 * 3600 * 1000
const BEIJING_OFFSET_MS = 8 * 3600 * 1000
/** WeChat renews a stable token in its last five minutes; asking earlier returns the same token. */
const STABLE_RENEWAL_WINDOW_MS = 290_000
/** A token fetched this recently is not refreshed ahead again, whatever it has left. */
const MIN_REFRESH_SPACING_MS = 30_000
const APP_WIDE_REMEMBERED = new Set(['WECHAT_INVALID_APPID', 'WECHAT_IP_NOT_ALLOWED', 'WECHAT_DAILY_QUOTA'])
const SECRET_REMEMBERED = new Set(['WECHAT_INVALID_SECRET', 'WECHAT_SECRET_FROZEN'])

interface Remembered { kind: string, message: string }

/** A token in the hot cache, with the secret that was verified for it and the time it stops being served from here. */
interface Hot { entry: TokenEntry, secret: string, until: number }

/** A stored JSON value, or undefined when absent or unreadable (a corrupted value is forgotten, not fatal). */
function parseJson<T> (raw: string | null): T | undefined {
  if (raw === null) return undefined
  try {
    const value: unknown = JSON.parse(raw)
    return typeof value === 'object' && value !== null ? value as T : undefined
  } catch {
    return undefined
  }
}

export function beijingDay (epochMs: number): string {
  return new Date(epochMs + BEIJING_OFFSET_MS).toISOString().slice(0, 10)
}

export function createTokenService (opts: TokenServiceOptions) {
  const { store, wechat } = opts
  const now = opts.now ?? Date.now
  const marginMs = opts.serveMarginSeconds * 1000
  const aheadMs = opts.refreshAheadSeconds * 1000
  const negativeMs = opts.negativeCacheSeconds * 1000
  const inflight = new Map<string, Promise<TokenEntry>>()
  const background = new Set<string>()
  const copies = new Map<string, TokenEntry>()
  const hot = new Map<string, Hot>()
  const hotMs = opts.hotCacheMs ?? 0
  const hotMax = opts.hotCacheMaxApps ?? 10_000
  const metrics = opts.metrics
  const fingerprintOf = createFingerprintCache(hotMax)
  store.onChange((appId) => hot.delete(appId))
  const configured = new Map<string, string>()
  for (const [appId, secret] of opts.apps ?? []) configured.set(appId, fingerprint(appId, secret))

  async function guarded<T> (operation: () => Promise<T>): Promise<T> {
    try {
      return await operation()
    } catch (err) {
      if (err instanceof AppError) throw err
      throw new AppError('STORE_UNAVAILABLE', 'The token store is unavailable', { cause: err })
    }
  }

  function usable (entry: TokenEntry | null, fp: string, minLifeMs: number): entry is TokenEntry {
    return entry !== null && sameString(entry.secretFingerprint, fp) && entry.expiresAt - now() > minLifeMs
  }

  /** When a served entry should be refreshed in the background. */
  function refreshDue (entry: TokenEntry): boolean {
    const ahead = entry.mode === 'stable' ? Math.min(aheadMs, STABLE_RENEWAL_WINDOW_MS) : aheadMs
    return entry.expiresAt - now() < ahead && now() - entry.fetchedAt > MIN_REFRESH_SPACING_MS
  }

  /** Remembers what was served, for outages; a Map kept in insertion order, oldest dropped first. */
  function keepCopy (appId: string, entry: TokenEntry): void {
    const copy = copies.get(appId)
    if (copy?.generation === entry.generation && copy.accessToken === entry.accessToken) return
    copies.delete(appId)
    copies.set(appId, entry)
    if (copies.size > OUTAGE_COPIES) copies.delete(copies.keys().next().value as string)
  }

  /** Keeps a just-served token in process for hotMs, never past its serving margin, with the verified secret. */
  function keepHot (appId: string, appSecret: string, entry: TokenEntry): void {
    if (hotMs === 0) return
    if (!hot.has(appId) && hot.size >= hotMax) hot.delete(hot.keys().next().value as string)
    hot.set(appId, { entry, secret: appSecret, until: Math.min(now() + hotMs, entry.expiresAt - marginMs) })
  }

  function served (entry: TokenEntry, at = now()): ServedToken {
    return {
      accessToken: entry.accessToken,
      expiresAt: entry.expiresAt,
      expiresIn: Math.max(0, Math.floor((entry.expiresAt - at) / 1000))
    }
  }

  function checkConfigured (appId: string, fp: string): void {
    if (!opts.apps) return
    const expected = configured.get(appId)
    if (expected === undefined) throw new AppError('APP_NOT_CONFIGURED', `appId ${appId} is not one of the configured WECHAT_APPS`)
    if (!sameString(expected, fp)) throw new AppError('SECRET_MISMATCH', 'appSecret does not match the configured secret for this appId')
  }

  async function rememberedError (appId: string, fp: string): Promise<AppError | null> {
    const [appWide, rejected] = await Promise.all([store.getValue(appId, 'negative'), store.getValue(appId, 'rejected')])
    const record = appWide ? parseJson<Remembered>(appWide) : parseJson<Record<string, Remembered>>(rejected)?.[fp]
    if (!record || typeof record.kind !== 'string' || !Object.hasOwn(ApiCodes, record.kind)) return null
    return new AppError(record.kind as keyof typeof ApiCodes, `${record.message} (remembered; WeChat is not asked again for a while)`)
  }

  async function remember (appId: string, fp: string, err: unknown): Promise<void> {
    if (!(err instanceof WechatApiError) || negativeMs <= 0) return
    const record: Remembered = { kind: err.kind, message: err.message }
    if (APP_WIDE_REMEMBERED.has(err.kind)) {
      await store.setValue(appId, 'negative', JSON.stringify(record), negativeMs)
    } else if (SECRET_REMEMBERED.has(err.kind)) {
      const rejected = parseJson<Record<string, Remembered>>(await store.getValue(appId, 'rejected')) ?? {}
      rejected[fp] = record
      await store.setValue(appId, 'rejected', JSON.stringify(rejected), Math.max(negativeMs, opts.secretCheckIntervalSeconds * 1000))
    }
  }

  /** The quota governor: every upstream token call of an app counts against its daily budget. Returns the count. */
  async function spendBudget (appId: string): Promise<number> {
    const day = beijingDay(now())
    const used = await store.increment(appId, `calls:${day}`, 2 * DAY_MS)
    if (used > opts.dailyUpstreamBudget) {
      throw new AppError('DAILY_BUDGET_EXHAUSTED',
        `appId ${appId} used its budget of ${opts.dailyUpstreamBudget} upstream token calls for ${day} (Beijing time)`)
    }
    return used
  }

  /** WeChat allows 20 forced refreshes a day, 30 s apart: refuse locally past either. Runs under the app's lock. */
  async function allowForcedRefresh (appId: string): Promise<void> {
    const spacing = opts.forceRefreshMinIntervalSeconds * 1000
    const last = Number(await store.getValue(appId, 'forced-at') ?? -Infinity)
    if (now() - last < spacing) {
      throw new AppError('FORCE_REFRESH_LIMITED', `A forced refresh of appId ${appId} ran less than ${opts.forceRefreshMinIntervalSeconds} s ago`)
    }
    const day = beijingDay(now())
    if (await store.increment(appId, `forced:${day}`, 2 * DAY_MS) > opts.forceRefreshDailyLimit) {
      throw new AppError('FORCE_REFRESH_LIMITED', `appId ${appId} used its ${opts.forceRefreshDailyLimit} forced refreshes for ${day} (Beijing time)`)
    }
    await store.setValue(appId, 'forced-at', String(now()), 2 * spacing)
  }

  /** Under the lock: fetch from WeChat and write with compare-and-set on the generation seen before fetching. */
  async function refreshHoldingLock (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    const generation = await store.generation(appId)
    const current = await store.get(appId)
    if (need.satisfied(current)) return current
    const remembered = await rememberedError(appId, need.fp)
    if (remembered) throw remembered
    const forced = need.reported !== undefined && wechat.mode === 'stable'
    const audit = need.reported === undefined
      ? undefined
      : { audit: 'forced-refresh', appId, mode: wechat.mode, caller: ctx.caller, requestId: ctx.requestId }
    let fetched
    try {
      if (forced) await allowForcedRefresh(appId)
      const used = await spendBudget(appId)
      fetched = await wechat.fetchToken(appId, need.secret, { deadline: need.deadline, forceRefresh: forced })
      metrics?.quotaUsed.labels(appId).set(used)
    } catch (err) {
      if (audit) {
        ctx.log.info({ ...audit, outcome: 'refused', apiCode: (err as AppError).apiCode }, 'forced refresh refused')
        metrics?.forcedRefreshes.labels('refused').inc()
      }
      await remember(appId, need.fp, err).catch(() => {})
      throw err
    }
    if (audit) {
      ctx.log.info({ ...audit, outcome: 'refreshed' }, 'forced refresh')
      metrics?.forcedRefreshes.labels('refreshed').inc()
    }
    const entry = tokenEntry({ ...fetched, mode: wechat.mode, secretFingerprint: need.fp, fetchedAt: now(), generation: generation + 1 })
    if (await store.compareAndSet(appId, entry, generation)) {
      ctx.log.debug({ generation: entry.generation }, 'token stored')
      return entry
    }
    ctx.log.warn({ generation }, 'a newer token was stored while this one was fetched; the newer one is kept')
    const newer = await store.get(appId)
    return newer !== null && sameString(newer.secretFingerprint, need.fp) ? newer : entry
  }

  /** Waits for, or takes, the app's lock until the need is met or the deadline passes. */
  async function obtain (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const owner = randomUUID()
    for (let waited = false; ; waited = true) {
      const entry = await store.get(need.appId)
      if (need.satisfied(entry)) return entry
      const remembered = await rememberedError(need.appId, need.fp)
      if (remembered) throw remembered
      if (await store.acquire(need.appId, LOCK, owner, opts.lockLeaseMs)) {
        try {
          return await refreshHoldingLock(need, ctx)
        } finally {
          await store.release(need.appId, LOCK, owner).catch(() => {})
          await store.notify(need.appId).catch(() => {})
        }
      }
      if (!waited) metrics?.lockWaits.inc()
      const remaining = need.deadline - now()
      if (remaining <= 0) {
        metrics?.lockTimeouts.inc()
        throw new AppError('REFRESH_IN_PROGRESS', `Another instance is fetching the token of appId ${need.appId}; it did not finish in time`)
      }
      await store.waitForChange(need.appId, Math.min(remaining, POLL_MS))
    }
  }

  function shared (key: string, run: () => Promise<TokenEntry>): Promise<TokenEntry> {
    let flight = inflight.get(key)
    if (!flight) {
      flight = run().finally(() => inflight.delete(key))
      inflight.set(key, flight)
    }
    return flight
  }

  function freshNeed (appId: string, secret: string, fp: string): Need {
    return {
      appId,
      secret,
      fp,
      deadline: now() + opts.requestDeadlineMs,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs)
    }
  }

  /** Refreshes ahead of expiry without making anyone wait: one try at the lock, no waiting for it; never rejects. */
  async function refreshInBackground (appId: string, secret: string, fp: string, log: FastifyBaseLogger): Promise<void> {
    if (background.has(appId)) return
    background.add(appId)
    const owner = randomUUID()
    const need: Need = {
      ...freshNeed(appId, secret, fp),
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs) && !refreshDue(entry)
    }
    const run = async (): Promise<void> => {
      if (!await store.acquire(appId, LOCK, owner, opts.lockLeaseMs)) return
      try {
        await refreshHoldingLock(need, { log })
      } finally {
        await store.release(appId, LOCK, owner).catch(() => {})
        await store.notify(appId).catch(() => {})
      }
    }
    await run()
      .catch((err: unknown) => log.warn({ err: safeError(err), apiCode: (err as AppError).apiCode }, 'background refresh failed'))
      .finally(() => background.delete(appId))
  }

  /** A mismatching secret is checked with WeChat at most once per app per interval; a rejection is remembered. */
  async function adoptNewSecret (appId: string, secret: string, fp: string, ctx: CallContext): Promise<TokenEntry> {
    const remembered = await rememberedError(appId, fp)
    if (remembered) throw remembered
    const interval = opts.secretCheckIntervalSeconds * 1000
    if (!await store.acquire(appId, 'secret-check', randomUUID(), interval)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    ctx.log.info('appSecret differs from the cached token\'s; checking it with WeChat')
    return await shared(`${appId}\0${fp}`, async () => await obtain(freshNeed(appId, secret, fp), ctx))
  }

  /**
   * While the store is down: the in-process copy for warm apps; for a cold app a direct fetch in stable mode
   * (idempotent, so it cannot break other instances), and a refusal in classic mode (a fetch would retire the
   * token the other instances serve).
   */
  async function duringOutage (appId: string, appSecret: string, fp: string, ctx: CallContext, outage: AppError): Promise<ServedToken> {
    const copy = copies.get(appId)
    if (copy && !sameString(copy.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    if (usable(copy ?? null, fp, marginMs)) {
      metrics?.outageHit.inc()
      return served(copy as TokenEntry)
    }
    metrics?.outageMiss.inc()
    if (wechat.mode === 'classic') {
      throw new AppError('STORE_UNAVAILABLE',
        'The token store is unavailable, and in classic mode a fetch would invalidate the token other instances serve', { cause: outage.cause })
    }
    ctx.log.warn('token store unavailable: fetching directly (stable mode)')
    const entry = await shared(`${appId}\0${fp}\0outage`, async () => {
      const fetched = await wechat.fetchToken(appId, appSecret, { deadline: now() + opts.requestDeadlineMs })
      return tokenEntry({ ...fetched, mode: wechat.mode, secretFingerprint: fp, fetchedAt: now(), generation: 0 })
    })
    keepCopy(appId, entry)
    return served(entry)
  }

  /**
   * After the store lost everything (a Redis restart without persistence), put back this instance's copy of a
   * still-valid token instead of fetching: in classic mode a fetch would retire the token every instance serves.
   * Only over generation 0, so it never replaces anything another instance wrote since.
   */
  async function restoreCopy (appId: string, fp: string, ctx: CallContext): Promise<TokenEntry | null> {
    const copy = copies.get(appId) ?? null
    if (!usable(copy, fp, marginMs) || await store.generation(appId) !== 0) return null
    const entry = tokenEntry({ ...copy, generation: 1 })
    if (!await store.compareAndSet(appId, entry, 0)) return null
    ctx.log.info('the token store had lost this app\'s token; restored from this instance\'s copy')
    await store.notify(appId).catch(() => {})
    return entry
  }

  /** The hot-cache answer, synchronously, when there is one for this appId and secret. */
  function fromHot (appId: string, appSecret: string): ServedToken | undefined {
    const kept = hot.get(appId)
    if (kept === undefined) return undefined
    const at = now()
    if (kept.until <= at || !sameString(kept.secret, appSecret)) return undefined
    metrics?.hotHit.inc()
    return served(kept.entry, at)
  }

  /** The token for appId, if appSecret is the right one. */
  async function getToken (appId: string, appSecret: string, ctx: CallContext): Promise<ServedToken> {
    const kept = fromHot(appId, appSecret)
    if (kept) return kept
    if (hotMs > 0) metrics?.hotMiss.inc()
    const fp = fingerprintOf(appId, appSecret)
    checkConfigured(appId, fp)
    let cached: TokenEntry | null
    try {
      cached = await guarded(() => store.get(appId))
      if (cached && !opts.apps && !sameString(cached.secretFingerprint, fp)) {
        return served(await guarded(() => adoptNewSecret(appId, appSecret, fp, ctx)))
      }
    } catch (err) {
      if (err instanceof AppError && err.kind === 'STORE_UNAVAILABLE') return await duringOutage(appId, appSecret, fp, ctx, err)
      throw err
    }
    if (usable(cached, fp, marginMs)) {
      metrics?.storeHit.inc()
      keepCopy(appId, cached)
      if (refreshDue(cached)) refreshInBackground(appId, appSecret, fp, ctx.log).catch(() => {})
      else keepHot(appId, appSecret, cached)
      return served(cached)
    }
    metrics?.storeMiss.inc()
    try {
      const restored = cached === null ? await guarded(() => restoreCopy(appId, fp, ctx)) : null
      const entry = restored ?? await guarded(() => shared(`${appId}\0${fp}`, async () => await obtain(freshNeed(appId, appSecret, fp), ctx)))
      keepCopy(appId, entry)
      keepHot(appId, appSecret, entry)
      return served(entry)
    } catch (err) {
      if (usable(cached, fp, 0)) {
        ctx.log.warn({ apiCode: (err as AppError).apiCode }, 'refresh failed; serving the cached token while it lasts')
        return served(cached)
      }
      if (err instanceof AppError && err.kind === 'STORE_UNAVAILABLE') return await duringOutage(appId, appSecret, fp, ctx, err)
      throw err
    }
  }

  /** "WeChat refused this token": refresh only while it is still the current one, within WeChat's limits. */
  async function refreshReported (appId: string, appSecret: string, reported: string, ctx: CallContext): Promise<RefreshOutcome> {
    const fp = fingerprintOf(appId, appSecret)
    checkConfigured(appId, fp)
    const cached = await guarded(() => store.get(appId))
    if (cached && !sameString(cached.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', 'appSecret does not match the secret of the cached token for this appId')
    }
    const need: Need = {
      ...freshNeed(appId, appSecret, fp),
      reported,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs) && entry.accessToken !== reported
    }
    try {
      return { token: served(await guarded(() => shared(`${appId}\0${fp}\0${reported}`, async () => await obtain(need, ctx)))) }
    } catch (err) {
      if (err instanceof AppError && err.kind === 'FORCE_REFRESH_LIMITED') {
        const current = await guarded(() => store.get(appId))
        return { token: usable(current, fp, 0) ? served(current) : null, notice: err }
      }
      throw err
    }
  }

  /** For the scheduler: refresh a configured app when it has no token or its token is due. */
  async function refreshIfDue (appId: string, log: FastifyBaseLogger): Promise<void> {
    const secret = opts.apps?.get(appId)
    if (secret === undefined) return
    const fp = fingerprint(appId, secret)
    const entry = await store.get(appId)
    if (usable(entry, fp, marginMs) && !refreshDue(entry)) return
    await refreshInBackground(appId, secret, fp, log)
  }

  /** Each app this instance has served, with its token's expiry (for the seconds-left gauge). */
  function known (): Array<[string, number]> {
    return [...copies].map(([appId, entry]) => [appId, entry.expiresAt])
  }

  return { fromHot, getToken, refreshReported, refreshIfDue, known }
}

export type TokenService = ReturnType<typeof createTokenService>
