/**
 * The guards in front of every upstream call for a credential: its daily budget, the allowances for secrets not yet
 * known to be right, WeChat's forced-refresh limits, and the refusals that retrying cannot fix. Their state lives in a
 * TokenStore: the shared one, or a process-local one while the shared one is down. Each credential keeps its own
 * budget and remembered refusals (under its prefix); secrets are verified by the access token's calls alone.
 *
 * A secret is verified when WeChat accepted it for the app (or it is the configured one). Only a verified secret
 * spends the app's token budget or a forced refresh. Checking any other secret is limited per caller (its key name,
 * else its address) per app, per caller over all apps, and per app per day from an allowance of its own, so that
 * nobody who proves nothing can spend the owner's budget or lock the owner out; a check WeChat accepts costs the
 * caller nothing against its limits.
 *
 * A failing upstream is backed off per app and credential, across instances: after each failed fetch (unreachable,
 * an HTTP error, errcode -1 or 45011, an answer that is not one; an undocumented errcode to a fetch with a verified
 * secret) nobody fetches again for a delay that doubles from a second to a minute, and a fetch during a run of
 * failures makes one attempt, no retries. An attempt whose request was never sent is given back to the budget it was
 * charged to; a fetch the caller's deadline cut short says nothing of WeChat. Values read back from the store that a
 * running instance cannot have written (a wait beyond the longest backoff, a time in the future) are ignored.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes, type ApiCodeName } from '../api-codes.js'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import { CLOCK_SKEW_MS, parseCount, type TokenStore } from '../store/types.js'
import { UpstreamError, type AttemptControl } from '../wechat/client.js'
import { WechatApiError } from '../wechat/errcodes.js'
import type { Guarded } from './credential.js'
import { beijingDay, msToBeijingMidnight, utcHour } from './rules.js'

export interface GuardOptions {
  negativeCacheSeconds: number
  forceRefreshDailyLimit: number
  forceRefreshMinIntervalSeconds: number
  /** Checks of unverified secrets: per caller per app and per caller over all apps in each window; per app per day. */
  unverifiedPerApp: number
  unverifiedPerCaller: number
  unverifiedWindowSeconds: number
  unverifiedDailyBudget: number
  now: () => number
  metrics?: Metrics | undefined
}

/** What an upstream call is for, as the guards see it. */
export interface Spend {
  credential: Guarded
  appId: string
  fp: string
  /** The secret is known to be right (configured, or accepted by WeChat for this app). */
  verified: boolean
  /** Who asked: a caller key's name (`key:…`) or a client address (`ip:…`). */
  origin: string
  /** A stable_token call with force_refresh. */
  forced: boolean
  /** The replacement of a token a caller reported as refused (classic mode: spaced as forced refreshes are). */
  reported?: boolean
}

/** An admitted check of an unverified secret, settled once its outcome is known. */
export interface Admission {
  /**
   * Settles the check with its outcome: `null` when the secret proved right (by this check or another's), else what
   * was thrown. Only a refusal WeChat gave keeps the check's place in the caller's counts; a check that failed without
   * an answer gives it back and backs the caller's checks off instead (a second, doubling to a minute, ended by a
   * success), and one that never reached WeChat gives it back.
   */
  settle: (outcome: unknown) => Promise<void>
}

const HOUR_MS = 3600 * 1000
const DAY_MS = 24 * HOUR_MS
/** How long a verified secret's fingerprint is remembered after its last accepted fetch. */
const VERIFIED_TTL_MS = 30 * DAY_MS
const APP_WIDE_REMEMBERED = new Set(['WECHAT_INVALID_APPID', 'WECHAT_IP_NOT_ALLOWED', 'WECHAT_DAILY_QUOTA'])
const SECRET_REMEMBERED = new Set(['WECHAT_INVALID_SECRET', 'WECHAT_SECRET_FROZEN'])
/** The failures that say nothing of the app or the secret, only that WeChat did not answer: they are backed off. */
const TRANSIENT = new Set<ApiCodeName>(['WECHAT_UNAVAILABLE', 'WECHAT_BAD_RESPONSE', 'WECHAT_BUSY', 'WECHAT_RATE_LIMITED'])
/**
 * An errcode WeChat does not document for the call: backed off after a fetch with a verified secret only, so that
 * nobody who proves nothing can hold the owner's fetches back (a check with another secret stays bounded by the
 * caller's limits).
 */
const UNKNOWN = 'WECHAT_ERROR'
const BACKOFF_FIRST_MS = 1000
export const BACKOFF_MAX_MS = 60_000
/** How long a run of failures is remembered after its backoff ends: a failure after a quiet spell starts from a second. */
const BACKOFF_MEMORY_MS = 10 * 60_000
/** How often a check of an unverified secret waiting for the caller's checks in flight looks again. */
const ADMISSION_POLL_MS = 100

/** A refusal remembered: its apiCode's name, its message, and WeChat's errcode when WeChat gave it. */
interface Remembered { kind: string, message: string, errcode?: number }

/** A run of failed fetches: how many, until when (epoch ms) nobody fetches, and the apiCode of the last. */
interface Backoff { failures: number, until: number, last: number }

/**
 * A stored run of failures, or undefined when absent or not plausible: a value that is not one, or one whose wait ends
 * further ahead than the longest backoff (written by hand, or by an instance whose clock runs far ahead), which would
 * hold the app back for as long as the key lives.
 */
function parseBackoff (raw: string | null, now: number): Backoff | undefined {
  if (raw === null) return undefined
  try {
    const value = JSON.parse(raw) as Partial<Backoff> | null
    return Number.isSafeInteger(value?.failures) && Number.isSafeInteger(value?.until) && Number.isSafeInteger(value?.last) &&
      value!.failures! > 0 && value!.until! - now <= BACKOFF_MAX_MS
      ? value as Backoff
      : undefined
  } catch {
    return undefined
  }
}

/**
 * Whether a failure of a fetch says WeChat did not answer this credential's own call (unreachable, HTTP error, errcode
 * -1 or 45011, a body that is not an answer; an undocumented errcode when `unknownToo`): not a failure of a call made
 * on the way (a ticket's token), nor one the caller's deadline cut short before WeChat had its time.
 */
function failedUpstream (err: unknown, api: string, unknownToo: boolean): err is AppError {
  if (!(err instanceof AppError) || (err as { api?: unknown }).api !== api) return false
  if (err instanceof UpstreamError && err.cutShort) return false
  return TRANSIENT.has(err.kind) || (unknownToo && err.kind === UNKNOWN)
}

/** The delay after the nth failure in a row: doubling from a second, at most a minute, less up to a fifth at random. */
function backoffDelay (failures: number): number {
  const full = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(failures - 1, 16))
  return Math.round(full * (0.8 + 0.2 * Math.random()))
}

/** A remembered record, or undefined when absent or unreadable (a corrupted value is forgotten, not fatal). */
function parseRemembered (raw: string | null): Remembered | undefined {
  if (raw === null) return undefined
  try {
    const value = JSON.parse(raw) as Partial<Remembered> | null
    return typeof value?.kind === 'string' && Object.hasOwn(ApiCodes, value.kind) && typeof value.message === 'string'
      ? value as Remembered
      : undefined
  } catch {
    return undefined
  }
}

/** The per-secret record's name: a fingerprint's first 132 bits, which name a secret as well as all 256 do. */
const rejectedName = (fp: string): string => `rejected:${fp.slice(0, 22)}`
/** The pseudo-app under which a caller's own counters live (no appId starts with an underscore). */
const callerSpace = (origin: string): string => `_caller:${origin}`

/**
 * The options of guards in front of calls made with configured secrets only (no forced refresh, no unverified
 * secret): the remembered refusals, budgets and backoffs alone apply.
 */
export function configuredOnly (negativeCacheSeconds: number, now: () => number, metrics?: Metrics): GuardOptions {
  return {
    negativeCacheSeconds,
    forceRefreshDailyLimit: 0,
    forceRefreshMinIntervalSeconds: 30,
    unverifiedPerApp: 0,
    unverifiedPerCaller: 0,
    unverifiedWindowSeconds: 1,
    unverifiedDailyBudget: 0,
    now,
    metrics
  }
}

export function createGuards (state: TokenStore, opts: GuardOptions) {
  const { now, metrics } = opts
  const negativeMs = opts.negativeCacheSeconds * 1000
  const windowMs = opts.unverifiedWindowSeconds * 1000

  function refuse (reason: string, credential: Guarded, kind: keyof typeof ApiCodes, message: string, options?: { retryAfterSeconds?: number, wechatErrcode?: number | undefined }): AppError {
    metrics?.localRefusals.labels(reason, credential.name).inc()
    return new AppError(kind, message, options)
  }

  /**
   * What stands before a fetch, in one round trip: a refusal remembered for the credential of the app (or, for a
   * forced refresh, for forced refreshes), or for this secret (the access token's calls alone check secrets), else a
   * backoff still running; and the run of failures the app is in, if any.
   */
  async function standing (credential: Guarded, appId: string, fp: string, forced: boolean): Promise<{ refusal: AppError | null, run: Backoff | undefined }> {
    const secretProved = credential.provesSecret
    const [appWide, forForced, forSecret, backoff] = await Promise.all([
      state.getValue(appId, `${credential.prefix}negative`),
      forced ? state.getValue(appId, 'negative-forced') : null,
      secretProved ? state.getValue(appId, rejectedName(fp)) : null,
      state.getValue(appId, `${credential.prefix}backoff`)
    ])
    const run = parseBackoff(backoff, now())
    const record = parseRemembered(appWide) ?? parseRemembered(forForced) ?? parseRemembered(forSecret)
    if (record) {
      return {
        refusal: refuse('remembered', credential, record.kind as keyof typeof ApiCodes, `${record.message} (remembered; WeChat is not asked again for a while)`,
          { wechatErrcode: Number.isSafeInteger(record.errcode) ? record.errcode : undefined }),
        run
      }
    }
    const left = run === undefined ? 0 : run.until - now()
    if (run === undefined || left <= 0) return { refusal: null, run }
    const seconds = Math.ceil(left / 1000)
    return {
      refusal: refuse('backoff', credential, 'UPSTREAM_BACKOFF', `WeChat failed on the last ${run.failures} fetch${run.failures > 1 ? 'es' : ''} of the ` +
        `${credential.name} of appId ${appId} (the last with apiCode ${run.last}); it is asked again in ${seconds} s`, { retryAfterSeconds: seconds }),
      run
    }
  }

  /** The refusal standing before a fetch: remembered, or a backoff still running; null when WeChat may be asked. */
  async function remembered (credential: Guarded, appId: string, fp: string, forced: boolean): Promise<AppError | null> {
    return (await standing(credential, appId, fp, forced)).refusal
  }

  /** A fetch failed for a reason that says nothing of the app or the secret: nobody fetches again for a while. */
  async function backOff (space: string, name: string, run: Backoff | undefined, err: AppError): Promise<void> {
    const failures = (run?.failures ?? 0) + 1
    const delay = backoffDelay(failures)
    const record = JSON.stringify({ failures, until: now() + delay, last: err.apiCode } satisfies Backoff)
    await state.setValue(space, name, record, delay + BACKOFF_MEMORY_MS)
  }

  /** Remembers a refusal of the credential's own upstream call (not one of a call it made on the way, for a token). */
  async function remember (spend: Spend, err: unknown): Promise<void> {
    if (!(err instanceof WechatApiError) || err.api !== spend.credential.api) return
    const { appId, fp, credential } = spend
    if (err.kind === 'WECHAT_INVALID_APPID' && !spend.verified) {
      // No such app at WeChat: no quota to protect, and no reason to keep a day-long counter for it.
      await state.forget(appId, `unverified:${beijingDay(now())}`)
    }
    if (negativeMs <= 0) return
    const record = JSON.stringify({ kind: err.kind, message: err.message, errcode: err.errcode } satisfies Remembered)
    if (spend.forced && err.kind === 'WECHAT_DAILY_QUOTA') {
      await state.setValue(appId, 'negative-forced', record, negativeMs)
    } else if (APP_WIDE_REMEMBERED.has(err.kind)) {
      await state.setValue(appId, `${credential.prefix}negative`, record, negativeMs)
    } else if (SECRET_REMEMBERED.has(err.kind) && !credential.provesSecret) {
      // Answered to a call that does not prove the secret (a login code's, say): remembered for that credential's calls
      // alone, so that no caller can hold the app's token back with it, nor unmark its secret as verified.
      await state.setValue(appId, `${credential.prefix}negative`, record, negativeMs)
    } else if (SECRET_REMEMBERED.has(err.kind)) {
      await state.setValue(appId, rejectedName(fp), record, negativeMs)
      if (spend.verified) await state.release(appId, 'verified', fp)
    }
  }

  /**
   * A call made with the token (getticket, the phone number) was refused for the token again after the token was
   * replaced: remembered, so that the token is not replaced again for every request while it lasts.
   */
  async function rememberRefusedAgain (appId: string, message: string): Promise<void> {
    if (negativeMs <= 0) return
    await state.setValue(appId, 'token-refused', JSON.stringify({ kind: 'WECHAT_TOKEN_REFUSED', message } satisfies Remembered), negativeMs)
  }

  /** Whether rememberRefusedAgain() was called for the app in the last NEGATIVE_CACHE_SECONDS. */
  async function refusedAgainRecently (appId: string): Promise<boolean> {
    return parseRemembered(await state.getValue(appId, 'token-refused')) !== undefined
  }

  async function isVerified (appId: string, fp: string): Promise<boolean> {
    const known = await state.getValue(appId, 'verified')
    return known !== null && sameString(known, fp)
  }

  /**
   * Admits one check of an unverified secret by this caller: per caller over all apps, then per caller for this app,
   * in the current window. Called once per check, before the app's lock is taken, so that refused checks cost no lock.
   * A check holds its place in both counts until it is settled (see Admission): only a refusal WeChat gave keeps it,
   * so a right secret costs the caller nothing and an outage of WeChat does not use the caller up. Checks of the
   * caller that failed without an answer back its checks off meanwhile (`unverified-backoff`), which bounds what it
   * can send during an outage (random appIds, say). A caller whose count is full of checks still in flight
   * (`unverified-pending`, which lapses a deadline after the last check began, should an instance die with one) waits
   * for them, up to its deadline, rather than being refused, so a backend that sends the right secrets of many apps
   * to a cold store is served; a count full of refusals is refused at once.
   */
  async function admitUnverified (credential: Guarded, appId: string, origin: string, deadline: number = now()): Promise<Admission> {
    const space = callerSpace(origin)
    const failing = parseBackoff(await state.getValue(space, 'unverified-backoff'), now())
    if (failing !== undefined && failing.until > now()) {
      const seconds = Math.ceil((failing.until - now()) / 1000)
      throw refuse('backoff', credential, 'UPSTREAM_BACKOFF', `This caller's last ${failing.failures} check${failing.failures > 1 ? 's' : ''} of appSecrets not yet ` +
        `known to be right failed without an answer from WeChat (the last with apiCode ${failing.last}); its next is made in ${seconds} s`, { retryAfterSeconds: seconds })
    }
    for (;;) {
      const overall = await state.increment(space, 'unverified', windowMs)
      if (overall <= opts.unverifiedPerCaller) break
      await state.increment(space, 'unverified', windowMs, -1)
      const pending = parseCount(await state.getValue(space, 'unverified-pending'))
      if (pending === 0 || deadline - now() <= ADMISSION_POLL_MS) {
        throw refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `This caller checked ${opts.unverifiedPerCaller} appSecrets not yet known to be right ` +
          `in ${opts.unverifiedWindowSeconds} s (over all apps); try later. A secret WeChat already accepted is not limited`)
      }
      await sleep(ADMISSION_POLL_MS)
    }
    const inFlightMs = Math.max(0, deadline - now()) + ADMISSION_POLL_MS * 10
    await state.increment(space, 'unverified-pending', inFlightMs, 1, true)
    /** Gives the check's places back, in the caller's count over all apps and (`forApp`) for this app. */
    const giveBack = async (forApp: boolean): Promise<void> => {
      await state.increment(space, 'unverified', windowMs, -1)
      if (forApp) await state.increment(appId, `unverified-by:${origin}`, windowMs, -1)
    }
    try {
      const forApp = await state.increment(appId, `unverified-by:${origin}`, windowMs)
      if (forApp > opts.unverifiedPerApp) {
        await state.increment(appId, `unverified-by:${origin}`, windowMs, -1)
        throw refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `This caller checked ${opts.unverifiedPerApp} appSecrets not yet known to be right ` +
          `for appId ${appId} in ${opts.unverifiedWindowSeconds} s; try later. A secret WeChat already accepted is not limited`)
      }
      if (parseCount(await state.getValue(appId, `unverified:${beijingDay(now())}`)) >= opts.unverifiedDailyBudget) {
        await state.increment(appId, `unverified-by:${origin}`, windowMs, -1)
        throw unverifiedDayUsed(credential, appId)
      }
    } catch (err) {
      // Refused here, before any check: the caller's place over all apps is given back too.
      await state.increment(space, 'unverified-pending', inFlightMs, -1).catch(() => {})
      await giveBack(false).catch(() => {})
      throw err
    }
    let settled = false
    return {
      async settle (outcome) {
        if (settled) return
        settled = true
        await state.increment(space, 'unverified-pending', inFlightMs, -1)
        if (outcome === null) {
          await giveBack(true)
          await state.forget(space, 'unverified-backoff')
        } else if (failedUpstream(outcome, credential.api, false)) {
          await giveBack(true)
          // WeChat down, not this app's own limit (45011): the caller's other checks would meet the same.
          if (outcome.kind !== 'WECHAT_RATE_LIMITED') await backOff(space, 'unverified-backoff', failing, outcome)
        } else if (!(outcome instanceof WechatApiError)) {
          await giveBack(true) // never answered by WeChat: a lock wait that ran out, a backoff, the store
        }
      }
    }
  }

  function unverifiedDayUsed (credential: Guarded, appId: string): AppError {
    return refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `appId ${appId} used its allowance of ${opts.unverifiedDailyBudget} ` +
      `upstream checks of appSecrets not yet known to be right for ${beijingDay(now())} (Beijing time); a secret WeChat already accepted is not limited`)
  }

  /**
   * Charges one upstream attempt: to the credential's budget for a verified secret, else to the app's unverified
   * allowance. Returns how to give it back (the attempt was never sent).
   */
  async function spendAttempt ({ credential, appId, verified }: Spend): Promise<() => Promise<void>> {
    const day = beijingDay(now())
    if (verified) {
      const hourly = credential.budgetWindow === 'hour'
      const period = hourly ? utcHour(now()) : day
      const name = `${credential.prefix}calls:${period}`
      const ttl = hourly ? 2 * HOUR_MS : 2 * DAY_MS
      const used = await state.increment(appId, name, ttl)
      // The gauge is today's count: an hourly budget's count is not one.
      const gauge = hourly ? undefined : metrics?.quotaUsed.labels(appId, credential.name)
      gauge?.set(used)
      if (used > credential.budget) {
        throw refuse('budget', credential, credential.budgetExhausted,
          `${appId} used its budget of ${credential.budget} upstream ${credential.name} calls ` +
          (hourly ? `for the hour from ${period}:00 UTC` : `for ${day} (Beijing time)`))
      }
      return async () => {
        const left = await state.increment(appId, name, ttl, -1)
        gauge?.set(left)
      }
    }
    const name = `unverified:${day}`
    const ttl = msToBeijingMidnight(now()) + 3600_000
    const used = await state.increment(appId, name, ttl)
    if (used > opts.unverifiedDailyBudget) throw unverifiedDayUsed(credential, appId)
    return async () => { await state.increment(appId, name, ttl, -1) }
  }

  /**
   * WeChat allows 20 forced refreshes a day, 30 s apart: refuse locally past either. In classic mode a reported token
   * is replaced by a normal fetch, which retires the token every other caller holds: spaced the same way, with no
   * daily count (the token budget bounds it). Runs under the app's lock, before the fetch; the fetch, once it
   * succeeded, is recorded by recordReplacement (one that failed or was never sent spends neither).
   */
  async function allowReplacement (credential: Guarded, appId: string, forced: boolean): Promise<void> {
    const spacing = opts.forceRefreshMinIntervalSeconds * 1000
    const recorded = Number(await state.getValue(appId, 'forced-at') ?? Number.NaN)
    // A time in the future (written by hand, or by an instance whose clock runs far ahead) would hold replacements back for good.
    const last = Number.isSafeInteger(recorded) && recorded <= now() + CLOCK_SKEW_MS ? recorded : -Infinity
    if (now() - last < spacing) {
      const what = forced ? 'A forced refresh' : 'A replacement of a reported token'
      throw refuse('forced_refresh', credential, 'FORCE_REFRESH_LIMITED', `${what} of appId ${appId} ran less than ${opts.forceRefreshMinIntervalSeconds} s ago`)
    }
    if (!forced) return
    const day = beijingDay(now())
    if (parseCount(await state.getValue(appId, `forced:${day}`)) >= opts.forceRefreshDailyLimit) {
      throw refuse('forced_refresh', credential, 'FORCE_REFRESH_LIMITED', `appId ${appId} used its ${opts.forceRefreshDailyLimit} forced refreshes for ${day} (Beijing time)`)
    }
  }

  /** A replacement was made: spaced from now on, and, forced, counted for the day. */
  async function recordReplacement (appId: string, forced: boolean): Promise<void> {
    const spacing = opts.forceRefreshMinIntervalSeconds * 1000
    await state.setValue(appId, 'forced-at', String(now()), 2 * spacing)
    if (forced) await state.increment(appId, `forced:${beijingDay(now())}`, 2 * DAY_MS)
  }

  /**
   * Makes an upstream call under every guard (an unverified secret was admitted before): a remembered refusal or a
   * running backoff answers at once; a forced refresh (or, in classic mode, a reported token's replacement) must be
   * allowed; each attempt is charged, and given back when it was never sent. WeChat's non-retryable refusals are
   * remembered, transient failures back off, and an accepted secret is remembered as verified.
   */
  async function call<T> (spend: Spend, run: (control: AttemptControl) => Promise<T>): Promise<T> {
    const { credential, appId, fp } = spend
    const { refusal, run: failing } = await standing(credential, appId, fp, spend.forced)
    if (refusal) throw refusal
    const replacing = spend.forced || (spend.reported === true && credential.mode === 'classic')
    if (replacing) await allowReplacement(credential, appId, spend.forced)
    let giveBack: (() => Promise<void>) | undefined
    let result: T
    try {
      result = await run({
        beforeAttempt: async () => { giveBack = await spendAttempt(spend) },
        notSent: async () => { await giveBack?.() },
        // The backoff is the retry of a failing app; and WeChat allows a forced refresh once in 30 s, so a retry of one
        // could only be refused or spend another.
        ...(failing !== undefined || spend.forced ? { maxRetries: 0 } : {})
      })
    } catch (err) {
      // The caller gets WeChat's answer either way; a refusal not remembered costs one more call later, no more, and
      // a backoff not written leaves the next fetch to the budget, which still bounds it.
      await remember(spend, err).catch(() => {})
      if (failedUpstream(err, credential.api, spend.verified && !credential.callerInput)) {
        metrics?.upstreamBackoffs.labels(credential.name).inc()
        await backOff(appId, `${credential.prefix}backoff`, failing, err).catch(() => {})
      }
      throw err
    }
    // A replacement not recorded can be made again sooner, which WeChat's own limits then answer.
    if (replacing) await recordReplacement(appId, spend.forced).catch(() => {})
    // Likewise: a secret not marked verified is checked once more later, from the unverified allowance; a run of
    // failures not forgotten makes the next failure wait longer, no more.
    if (credential.provesSecret) await state.setValue(appId, 'verified', fp, VERIFIED_TTL_MS).catch(() => {})
    if (failing) await state.forget(appId, `${credential.prefix}backoff`).catch(() => {})
    return result
  }

  return { call, remembered, isVerified, admitUnverified, rememberRefusedAgain, refusedAgainRecently }
}

export type Guards = ReturnType<typeof createGuards>
