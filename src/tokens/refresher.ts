/**
 * The refresher of one credential: one upstream fetch per app for any herd, in the process (shared promises) and
 * across instances (a lock in the store, and a write that is a compare-and-set on the slot's generation, so a holder
 * whose lease ran out cannot overwrite a newer entry). Every fetch passes the guards; a caller is only handed an
 * entry that was stored.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import { safeError } from '../logger.js'
import type { Metrics } from '../metrics.js'
import { NO_CHANGE, StoreError, stampOf, tokenEntry, type TokenEntry, type TokenStore } from '../store/types.js'
import type { AttemptControl, FetchedToken } from '../wechat/client.js'
import type { Credential } from './credential.js'
import type { Admission, Guards } from './guards.js'

export interface CallContext {
  log: FastifyBaseLogger
  /** Who is asking, for logs and the audit trail. */
  caller?: string | undefined
  requestId?: string | undefined
  /** Who is asking, for the allowances of unverified secrets: `key:<caller key name>` or `ip:<address>`. */
  origin: string
  /**
   * Epoch ms by which the whole request must be answered, every fetch and call on its way included; unset, each
   * refresh gets REQUEST_DEADLINE_MS from when it starts.
   */
  deadline?: number | undefined
}

/** What a caller needs from a refresh. */
export interface Need {
  appId: string
  fp: string
  deadline: number
  /** The secret is known to be right (configured, or accepted by WeChat for this app). */
  verified: boolean
  /** The entry the caller can use, or false when a refresh is needed. */
  satisfied: (entry: TokenEntry | null) => entry is TokenEntry
  /** The token a caller reported as refused by WeChat: refresh only while it is still the current one. */
  reported?: string
  /** The fetch is a stable_token call with force_refresh (limited by WeChat). */
  forced: boolean
  /** The upstream fetch, each attempt followed by the guards (charged, given back when never sent, retries bounded). */
  fetch: (control: AttemptControl) => Promise<FetchedToken>
}

export interface RefresherOptions {
  credential: Credential
  store: TokenStore
  guards: Guards
  lockLeaseMs: number
  now: () => number
  metrics?: Metrics | undefined
}

const POLL_MS = 250
/** Refusals that say nothing new: the failure behind them was logged when it happened. */
const QUIET = new Set(['UPSTREAM_BACKOFF', 'REFRESH_IN_PROGRESS'])

export function createRefresher (opts: RefresherOptions) {
  const { credential, store, guards, now, metrics } = opts
  const { slot } = credential
  const lock = `${credential.prefix}lock`
  const lockWaits = metrics?.lockWaits.labels(credential.name)
  const lockTimeouts = metrics?.lockTimeouts.labels(credential.name)
  const inflight = new Map<string, Promise<TokenEntry>>()
  const background = new Map<string, Promise<void>>()
  let closed = false

  /** Concurrent callers with the same key share one promise. */
  function shared (key: string, run: () => Promise<TokenEntry>): Promise<TokenEntry> {
    let flight = inflight.get(key)
    if (!flight) {
      flight = run().finally(() => inflight.delete(key))
      inflight.set(key, flight)
    }
    return flight
  }

  /**
   * Stores a fetched entry by compare-and-set over the generation seen before fetching. When another entry was stored
   * meanwhile (a holder whose lease lapsed, a fetch that overlapped this one after the store lost the lock, a copy put
   * back after a flush), the one WeChat issued last wins: the one whose answer arrived last. An entry answered before
   * this one is written over (in classic mode WeChat retires it five minutes after this fetch; in stable mode this one
   * is WeChat's later word); one answered after this one is kept and served instead.
   */
  async function write (need: Need, fetched: FetchedToken, seen: number, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    let expected = seen
    for (let tries = 0; tries < 3; tries++) {
      const entry = tokenEntry({
        accessToken: fetched.accessToken,
        expiresAt: fetched.expiresAt,
        mode: credential.mode,
        secretFingerprint: need.fp,
        fetchedAt: fetched.receivedAt,
        generation: expected + 1
      })
      if (await store.compareAndSet(appId, entry, expected, slot)) {
        ctx.log.debug({ credential: credential.name, generation: entry.generation }, 'stored')
        return entry
      }
      const [generation, newer] = await Promise.all([store.generation(appId, slot), store.get(appId, slot)])
      if (newer !== null && !sameString(newer.secretFingerprint, need.fp)) {
        throw new AppError('SECRET_MISMATCH', `A ${credential.name} for another appSecret was stored while this one was fetched`)
      }
      if (newer !== null && (newer.fetchedAt >= fetched.receivedAt || newer.accessToken === fetched.accessToken)) {
        ctx.log.warn({ credential: credential.name, generation: seen }, `a ${credential.name} issued later was stored while this one was fetched; the later one is kept`)
        return newer
      }
      if (newer !== null) {
        ctx.log.warn({ credential: credential.name, generation }, `a ${credential.name} issued earlier was stored while this one was fetched; it is replaced by this one`)
      }
      expected = generation
    }
    throw new StoreError(new Error(`the compare-and-set of a new ${credential.name} was refused three times`))
  }

  /** Under the lock: fetch from WeChat (through the guards) and store the entry. */
  async function refreshHoldingLock (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    const [generation, current] = await Promise.all([store.generation(appId, slot), store.get(appId, slot)])
    if (need.satisfied(current)) return current
    // The request's logger already names the appId and the caller.
    const audit = need.reported === undefined
      ? undefined
      : { audit: 'forced-refresh', mode: credential.mode, requestId: ctx.requestId }
    let fetched
    try {
      fetched = await guards.call({
        credential, appId, fp: need.fp, verified: need.verified, origin: ctx.origin, forced: need.forced, reported: need.reported !== undefined
      }, need.fetch)
    } catch (err) {
      if (audit) {
        ctx.log.info({ ...audit, outcome: 'refused', apiCode: (err as AppError).apiCode }, 'forced refresh refused')
        metrics?.forcedRefreshes.labels('refused').inc()
      }
      throw err
    }
    if (audit) {
      ctx.log.info({ ...audit, outcome: 'refreshed' }, 'forced refresh')
      metrics?.forcedRefreshes.labels('refreshed').inc()
    }
    return await write(need, fetched, generation, ctx)
  }

  /**
   * One try at the app's lock: the refreshed entry, or undefined when another holder has it. Always released, and
   * announced: with the stored entry's stamp, or, when nothing was written, as no change (which only wakes waiters).
   */
  async function tryRefresh (need: Need, ctx: CallContext, owner: string): Promise<TokenEntry | undefined> {
    if (!await store.acquire(need.appId, lock, owner, opts.lockLeaseMs)) return undefined
    let stamp = NO_CHANGE
    try {
      const entry = await refreshHoldingLock(need, ctx)
      stamp = stampOf(entry)
      return entry
    } finally {
      // A lock not released lapses with its lease; a change not announced is found by the waiters' polling.
      await store.release(need.appId, lock, owner).catch(() => {})
      await store.notify(credential.subject(need.appId), stamp).catch(() => {})
    }
  }

  /**
   * Waits for, or takes, the app's lock until the need is met or the deadline passes. A secret not yet verified is
   * admitted once (the caller's limits) and the admission settled with the outcome: met, by this fetch or another's,
   * it costs the caller nothing.
   */
  async function obtain (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const owner = randomUUID()
    let admission: Admission | undefined
    try {
      for (let waited = false; ; waited = true) {
        const entry = await store.get(need.appId, slot)
        const differs = entry !== null && !sameString(entry.secretFingerprint, need.fp)
        if (need.satisfied(entry)) {
          await admission?.settle(true).catch(() => {}) // not given back: the caller's window holds one more, no more
          return entry
        }
        const remembered = await guards.remembered(credential, need.appId, need.fp, need.forced)
        if (remembered) throw remembered
        if (!need.verified && admission === undefined) {
          admission = await guards.admitUnverified(credential, need.appId, ctx.origin, need.deadline)
          ctx.log[differs ? 'info' : 'debug']({ credential: credential.name }, differs
            ? 'appSecret differs from the stored one\'s; checking it with WeChat'
            : 'appSecret not yet known to be right; checking it with WeChat')
        }
        const refreshed = await tryRefresh(need, ctx, owner)
        if (refreshed) {
          await admission?.settle(true).catch(() => {}) // likewise
          return refreshed
        }
        if (!waited) lockWaits?.inc()
        const remaining = need.deadline - now()
        if (remaining <= 0) {
          lockTimeouts?.inc()
          throw new AppError('REFRESH_IN_PROGRESS', `Another instance is fetching the ${credential.name} of appId ${need.appId}; it did not finish in time`)
        }
        await store.waitForChange(credential.subject(need.appId), Math.min(remaining, POLL_MS))
      }
    } catch (err) {
      await admission?.settle(false).catch(() => {}) // the check counts as failed either way
      throw err
    }
  }

  /** Runs `run` holding the app's lock for this credential, if it is free (one try); undefined when another holds it. */
  async function whileLocked<T> (appId: string, run: () => Promise<T>): Promise<T | undefined> {
    const owner = randomUUID()
    if (!await store.acquire(appId, lock, owner, opts.lockLeaseMs)) return undefined
    try {
      return await run()
    } finally {
      await store.release(appId, lock, owner).catch(() => {})
    }
  }

  /**
   * Refreshes ahead of expiry without making anyone wait: one try at the lock, no waiting for it, nothing tried while
   * a refusal is remembered or the app's fetches are backed off; never rejects.
   */
  function inBackground (need: Need, log: FastifyBaseLogger): Promise<void> {
    const running = background.get(need.appId)
    if (running || closed) return running ?? Promise.resolve()
    const ctx: CallContext = { log, origin: 'background' }
    const done = guards.remembered(credential, need.appId, need.fp, need.forced)
      .then(async (refusal) => {
        if (refusal) log.debug({ apiCode: refusal.apiCode, credential: credential.name }, 'background refresh not tried: ' + refusal.message)
        else await tryRefresh(need, ctx, randomUUID())
      })
      .then(() => undefined, (err: unknown) => {
        const quiet = err instanceof AppError && QUIET.has(err.kind)
        log[quiet ? 'debug' : 'warn']({ err: safeError(err), apiCode: (err as AppError).apiCode, credential: credential.name }, 'background refresh failed')
      })
      .finally(() => background.delete(need.appId))
    background.set(need.appId, done)
    return done
  }

  /** Starts no more background refreshes and waits for those running (before the store closes). */
  async function drain (): Promise<void> {
    closed = true
    await Promise.all(background.values())
  }

  return { shared, obtain, whileLocked, inBackground, drain }
}

export type Refresher = ReturnType<typeof createRefresher>
