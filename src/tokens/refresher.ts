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
import { NO_CHANGE, StoreError, fetchedEntry, stampOf, type TokenEntry, type TokenStore } from '../store/types.js'
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

/**
 * The context with this deadline, built field by field (the type check fails until a field added to CallContext is
 * added here): a context is made in several shapes, and spreading one into a new object took V8's slow path, about
 * 1 µs of a ticket's store hit.
 */
export function withDeadline (ctx: CallContext, deadline: number): CallContext {
  return { log: ctx.log, caller: ctx.caller, requestId: ctx.requestId, origin: ctx.origin, deadline } satisfies Record<keyof CallContext, unknown>
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
  /**
   * A normal fetch (never forced), made when another entry was written while this one was fetched and which of the two
   * WeChat issued last cannot be told: made after both answers arrived, it is WeChat's latest word.
   */
  confirm: (control: AttemptControl) => Promise<FetchedToken>
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
   * back after a flush), the one WeChat issued last wins, as far as the times tell: WeChat issued each between its
   * request and its answer. An entry answered before this one's request was sent is older (in classic mode WeChat
   * retires it five minutes after this fetch) and is written over; one requested after this one was answered is newer
   * and is kept. When the two overlap, one more normal fetch (its request sent after both answers arrived) settles it;
   * should that fail, the answer that arrived last wins.
   */
  async function write (need: Need, first: FetchedToken, seen: number, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    let fetched = first
    let confirmed = false
    let expected = seen
    for (let tries = 0; tries < 4; tries++) {
      const entry = fetchedEntry(fetched, credential.mode, need.fp, expected + 1)
      if (await store.compareAndSet(appId, entry, expected, slot)) {
        ctx.log.debug({ credential: credential.name, generation: entry.generation }, 'stored')
        return entry
      }
      const [generation, stored] = await Promise.all([store.generation(appId, slot), store.get(appId, slot)])
      expected = generation
      if (stored === null) continue
      if (!sameString(stored.secretFingerprint, need.fp)) {
        throw new AppError('SECRET_MISMATCH', `A ${credential.name} for another appSecret was stored while this one was fetched`)
      }
      if (stored.accessToken === fetched.accessToken) return stored
      let newer: boolean
      if (stored.fetchedAt < fetched.sentAt) newer = true
      else if (fetched.receivedAt < stored.sentAt) newer = false
      else if (!confirmed) {
        confirmed = true
        const settled = await confirm(need, ctx)
        if (settled !== undefined) {
          fetched = settled
          continue
        }
        newer = fetched.receivedAt > stored.fetchedAt
      } else {
        newer = fetched.receivedAt > stored.fetchedAt
      }
      if (!newer) {
        ctx.log.warn({ credential: credential.name, generation: seen }, `a ${credential.name} issued later was stored while this one was fetched; the later one is kept`)
        return stored
      }
      ctx.log.warn({ credential: credential.name, generation }, `a ${credential.name} issued earlier was stored while this one was fetched; it is replaced by this one`)
    }
    throw new StoreError(new Error(`the compare-and-set of a new ${credential.name} was refused four times`))
  }

  /** One more normal fetch, under the guards, to tell which of two overlapping fetches is WeChat's latest; undefined when it fails. */
  async function confirm (need: Need, ctx: CallContext): Promise<FetchedToken | undefined> {
    ctx.log.info({ credential: credential.name }, `another ${credential.name} was fetched at the same time; fetching once more to keep WeChat's latest`)
    try {
      return await guards.call({ credential, appId: need.appId, fp: need.fp, verified: true, origin: ctx.origin, forced: false }, need.confirm)
    } catch (err) {
      ctx.log.warn({ err: safeError(err), apiCode: (err as AppError).apiCode, credential: credential.name }, 'the fetch to tell which is latest failed; the answer that arrived last is kept')
      return undefined
    }
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
    // A check of a secret not yet verified takes a lock of its own, per secret: it shares one check among the callers
    // with that secret on every instance, and never holds up the owner's fetch, whatever WeChat takes to refuse it.
    const held = need.verified ? lock : `${credential.prefix}check-lock:${need.fp.slice(0, 22)}`
    if (!await store.acquire(need.appId, held, owner, opts.lockLeaseMs)) return undefined
    let stamp = NO_CHANGE
    try {
      const entry = await refreshHoldingLock(need, ctx)
      stamp = stampOf(entry)
      return entry
    } finally {
      // A lock not released lapses with its lease; a change not announced is found by the waiters' polling.
      await store.release(need.appId, held, owner).catch(() => {})
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
          await admission?.settle(null).catch(() => {}) // a give-back that failed leaves the caller's window one place fuller, no more
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
        // A wait that ran out: another holder's fetch did not finish in time; this caller has no time for its own.
        if (waited && need.deadline - now() <= 0) throw lockTimeout(need)
        const refreshed = await tryRefresh(need, ctx, owner)
        if (refreshed) {
          await admission?.settle(null).catch(() => {}) // likewise
          return refreshed
        }
        if (!waited) lockWaits?.inc()
        const remaining = need.deadline - now()
        if (remaining <= 0) throw lockTimeout(need)
        await store.waitForChange(credential.subject(need.appId), Math.min(remaining, POLL_MS))
      }
    } catch (err) {
      await admission?.settle(err).catch(() => {}) // likewise
      throw err
    }
  }

  function lockTimeout (need: Need): AppError {
    lockTimeouts?.inc()
    return new AppError('REFRESH_IN_PROGRESS', `Another instance is fetching the ${credential.name} of appId ${need.appId}; it did not finish in time`)
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
