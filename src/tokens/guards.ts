/**
 * The guards in front of every upstream call for a credential: its daily budget, the allowances for secrets not yet
 * known to be right, WeChat's forced-refresh limits, and the refusals that retrying cannot fix. Their state lives in a
 * TokenStore: the shared one, or a process-local one while the shared one is down. Each credential keeps its own
 * budget and remembered refusals (under its prefix); secrets are verified by the access token's calls alone.
 *
 * A secret is verified when WeChat accepted it for the app (or it is the configured one). Only a verified secret
 * spends the app's token budget or a forced refresh. Checking any other secret is limited per caller (its key name,
 * else its address) per app, per caller over all apps, and per app per day from an allowance of its own, so that
 * nobody who proves nothing can spend the owner's budget or lock the owner out.
 */
import { ApiCodes } from '../api-codes.js'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import { parseCount, type TokenStore } from '../store/types.js'
import { WechatApiError } from '../wechat/errcodes.js'
import type { Credential } from './credential.js'
import { beijingDay, msToBeijingMidnight } from './rules.js'

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
  credential: Credential
  appId: string
  fp: string
  /** The secret is known to be right (configured, or accepted by WeChat for this app). */
  verified: boolean
  /** Who asked: a caller key's name (`key:…`) or a client address (`ip:…`). */
  origin: string
  /** A stable_token call with force_refresh. */
  forced: boolean
}

const DAY_MS = 24 * 3600 * 1000
/** How long a verified secret's fingerprint is remembered after its last accepted fetch. */
const VERIFIED_TTL_MS = 30 * DAY_MS
const APP_WIDE_REMEMBERED = new Set(['WECHAT_INVALID_APPID', 'WECHAT_IP_NOT_ALLOWED', 'WECHAT_DAILY_QUOTA'])
const SECRET_REMEMBERED = new Set(['WECHAT_INVALID_SECRET', 'WECHAT_SECRET_FROZEN'])

interface Remembered { kind: string, message: string }

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

export function createGuards (state: TokenStore, opts: GuardOptions) {
  const { now, metrics } = opts
  const negativeMs = opts.negativeCacheSeconds * 1000
  const windowMs = opts.unverifiedWindowSeconds * 1000

  function refuse (reason: string, credential: Credential, kind: keyof typeof ApiCodes, message: string): AppError {
    metrics?.localRefusals.labels(reason, credential.name).inc()
    return new AppError(kind, message)
  }

  /**
   * A refusal remembered for the credential of the app (or, for a forced refresh, for forced refreshes), or for this
   * secret (the access token's calls alone check secrets).
   */
  async function remembered (credential: Credential, appId: string, fp: string, forced: boolean): Promise<AppError | null> {
    const tokenCall = credential.api === 'token'
    const [appWide, forForced, forSecret] = await Promise.all([
      state.getValue(appId, `${credential.prefix}negative`),
      forced ? state.getValue(appId, 'negative-forced') : null,
      tokenCall ? state.getValue(appId, rejectedName(fp)) : null
    ])
    const record = parseRemembered(appWide) ?? parseRemembered(forForced) ?? parseRemembered(forSecret)
    if (!record) return null
    return refuse('remembered', credential, record.kind as keyof typeof ApiCodes, `${record.message} (remembered; WeChat is not asked again for a while)`)
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
    const record = JSON.stringify({ kind: err.kind, message: err.message } satisfies Remembered)
    if (spend.forced && err.kind === 'WECHAT_DAILY_QUOTA') {
      await state.setValue(appId, 'negative-forced', record, negativeMs)
    } else if (APP_WIDE_REMEMBERED.has(err.kind)) {
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
   */
  async function admitUnverified (credential: Credential, appId: string, origin: string): Promise<void> {
    const overall = await state.increment(callerSpace(origin), 'unverified', windowMs)
    if (overall > opts.unverifiedPerCaller) {
      throw refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `This caller checked ${opts.unverifiedPerCaller} appSecrets not yet known to be right ` +
        `in ${opts.unverifiedWindowSeconds} s (over all apps); try later. A secret WeChat already accepted is not limited`)
    }
    const forApp = await state.increment(appId, `unverified-by:${origin}`, windowMs)
    if (forApp > opts.unverifiedPerApp) {
      throw refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `This caller checked ${opts.unverifiedPerApp} appSecrets not yet known to be right ` +
        `for appId ${appId} in ${opts.unverifiedWindowSeconds} s; try later. A secret WeChat already accepted is not limited`)
    }
    if (parseCount(await state.getValue(appId, `unverified:${beijingDay(now())}`)) >= opts.unverifiedDailyBudget) throw unverifiedDayUsed(credential, appId)
  }

  function unverifiedDayUsed (credential: Credential, appId: string): AppError {
    return refuse('unverified', credential, 'UNVERIFIED_CHECKS_LIMITED', `appId ${appId} used its allowance of ${opts.unverifiedDailyBudget} ` +
      `upstream checks of appSecrets not yet known to be right for ${beijingDay(now())} (Beijing time); a secret WeChat already accepted is not limited`)
  }

  /**
   * Charges one upstream attempt: to the credential's budget for a verified secret, else to the app's unverified
   * allowance.
   */
  async function spendAttempt ({ credential, appId, verified }: Spend): Promise<void> {
    const day = beijingDay(now())
    if (verified) {
      const used = await state.increment(appId, `${credential.prefix}calls:${day}`, 2 * DAY_MS)
      metrics?.quotaUsed.labels(appId, credential.name).set(used)
      if (used > credential.dailyBudget) {
        const kind = credential.api === 'token' ? 'DAILY_BUDGET_EXHAUSTED' : 'TICKET_BUDGET_EXHAUSTED'
        throw refuse('budget', credential, kind,
          `appId ${appId} used its budget of ${credential.dailyBudget} upstream ${credential.name} calls for ${day} (Beijing time)`)
      }
      return
    }
    const used = await state.increment(appId, `unverified:${day}`, msToBeijingMidnight(now()) + 3600_000)
    if (used > opts.unverifiedDailyBudget) throw unverifiedDayUsed(credential, appId)
  }

  /** WeChat allows 20 forced refreshes a day, 30 s apart: refuse locally past either. Runs under the app's lock. */
  async function allowForcedRefresh (credential: Credential, appId: string): Promise<void> {
    const spacing = opts.forceRefreshMinIntervalSeconds * 1000
    const last = Number(await state.getValue(appId, 'forced-at') ?? -Infinity)
    if (now() - last < spacing) {
      throw refuse('forced_refresh', credential, 'FORCE_REFRESH_LIMITED', `A forced refresh of appId ${appId} ran less than ${opts.forceRefreshMinIntervalSeconds} s ago`)
    }
    const day = beijingDay(now())
    if (await state.increment(appId, `forced:${day}`, 2 * DAY_MS) > opts.forceRefreshDailyLimit) {
      throw refuse('forced_refresh', credential, 'FORCE_REFRESH_LIMITED', `appId ${appId} used its ${opts.forceRefreshDailyLimit} forced refreshes for ${day} (Beijing time)`)
    }
    await state.setValue(appId, 'forced-at', String(now()), 2 * spacing)
  }

  /**
   * Makes an upstream call under every guard (an unverified secret was admitted before): a remembered refusal answers
   * at once; a forced refresh must be allowed; each attempt is charged. WeChat's non-retryable refusals are
   * remembered; an accepted secret is remembered as verified.
   */
  async function call<T> (spend: Spend, run: (beforeAttempt: () => Promise<void>) => Promise<T>): Promise<T> {
    const { credential, appId, fp } = spend
    const known = await remembered(credential, appId, fp, spend.forced)
    if (known) throw known
    if (spend.forced) await allowForcedRefresh(credential, appId)
    let result: T
    try {
      result = await run(async () => await spendAttempt(spend))
    } catch (err) {
      // The caller gets WeChat's answer either way; a refusal not remembered costs one more call later, no more.
      await remember(spend, err).catch(() => {})
      throw err
    }
    // Likewise: a secret not marked verified is checked once more later, from the unverified allowance.
    if (credential.api === 'token') await state.setValue(appId, 'verified', fp, VERIFIED_TTL_MS).catch(() => {})
    return result
  }

  return { call, remembered, isVerified, admitUnverified, rememberRefusedAgain, refusedAgainRecently }
}

export type Guards = ReturnType<typeof createGuards>
