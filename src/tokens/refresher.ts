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
import type { FetchedToken } from '../wechat/client.js'
import type { Credential } from './credential.js'
import type { Guards } from './guards.js'

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
  /** The upstream fetch; `beforeAttempt` runs before each attempt, retries included. */
  fetch: (beforeAttempt: () => Promise<void>) => Promise<FetchedToken>
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
   * Stores a fetched entry by compare-and-set over the generation seen before fetching. An entry stored meanwhile
   * wins, unless a fetch retires the one served (classic mode) and that entry was fetched before this fetch began (a
   * copy put back after a flush, a holder whose lease lapsed): WeChat retired it, so this one is written over it.
   */
  async function write (need: Need, fetched: FetchedToken, seen: number, startedAt: number, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    let expected = seen
    for (let tries = 0; tries < 2; tries++) {
      const entry = tokenEntry({ ...fetched, mode: credential.mode, secretFingerprint: need.fp, fetchedAt: now(), generation: expected + 1 })
      if (await store.compareAndSet(appId, entry, expected, slot)) {
        ctx.log.debug({ credential: credential.name, generation: entry.generation }, 'stored')
        return entry
      }
      const [generation, newer] = await Promise.all([store.generation(appId, slot), store.get(appId, slot)])
      if (newer !== null && !sameString(newer.secretFingerprint, need.fp)) {
        throw new AppError('SECRET_MISMATCH', `A ${credential.name} for another appSecret was stored while this one was fetched`)
      }
      const retired = credential.mode === 'classic' && newer !== null && newer.fetchedAt < startedAt
      if (need.satisfied(newer) && !retired) {
        ctx.log.warn({ credential: credential.name, generation: seen }, `a newer ${credential.name} was stored while this one was fetched; the newer one is kept`)
        return newer
      }
      expected = generation
    }
    throw new StoreError(new Error(`the compare-and-set of a new ${credential.name} was refused twice`))
  }

  /** Under the lock: fetch from WeChat (through the guards) and store the entry. */
  async function refreshHoldingLock (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const { appId } = need
    const [generation, current] = await Promise.all([store.generation(appId, slot), store.get(appId, slot)])
    if (need.satisfied(current)) return current
    const audit = need.reported === undefined
      ? undefined
      : { audit: 'forced-refresh', appId, mode: credential.mode, caller: ctx.caller, requestId: ctx.requestId }
    const startedAt = now()
    let fetched
    try {
      fetched = await guards.call({ credential, appId, fp: need.fp, verified: need.verified, origin: ctx.origin, forced: need.forced }, need.fetch)
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
    return await write(need, fetched, generation, startedAt, ctx)
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

  /** Waits for, or takes, the app's lock until the need is met or the deadline passes. */
  async function obtain (need: Need, ctx: CallContext): Promise<TokenEntry> {
    const owner = randomUUID()
    let admitted = need.verified
    for (let waited = false; ; waited = true) {
      const entry = await store.get(need.appId, slot)
      if (need.satisfied(entry)) return entry
      const remembered = await guards.remembered(credential, need.appId, need.fp, need.forced)
      if (remembered) throw remembered
      if (!admitted) {
        await guards.admitUnverified(credential, need.appId, ctx.origin)
        admitted = true
      }
      const refreshed = await tryRefresh(need, ctx, owner)
      if (refreshed) return refreshed
      if (!waited) lockWaits?.inc()
      const remaining = need.deadline - now()
      if (remaining <= 0) {
        lockTimeouts?.inc()
        throw new AppError('REFRESH_IN_PROGRESS', `Another instance is fetching the ${credential.name} of appId ${need.appId}; it did not finish in time`)
      }
      await store.waitForChange(credential.subject(need.appId), Math.min(remaining, POLL_MS))
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

  /** Refreshes ahead of expiry without making anyone wait: one try at the lock, no waiting for it; never rejects. */
  function inBackground (need: Need, log: FastifyBaseLogger): Promise<void> {
    const running = background.get(need.appId)
    if (running || closed) return running ?? Promise.resolve()
    const done = tryRefresh(need, { log, origin: 'background' }, randomUUID())
      .then(() => undefined, (err: unknown) => {
        log.warn({ err: safeError(err), apiCode: (err as AppError).apiCode, credential: credential.name }, 'background refresh failed')
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
