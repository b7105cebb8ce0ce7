/**
 * The lifecycle of one credential (an access token, a ticket), the same for all: answered from the hot cache, else
 * from the store while it has life left (refreshed in the background once due), else by one refresh shared by every
 * caller and instance (src/tokens/refresher.ts) under the guards (src/tokens/guards.ts), serving the stored entry
 * while it lasts when the refresh fails; while the store is down, from this instance's copies
 * (src/tokens/local-caches.ts). What differs between credentials is their Source: how one is fetched, when a
 * secret is known to be right, and what to do while the store is down.
 */
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { sameString } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import { StoreError, stampOf, tokenEntry, type TokenEntry, type TokenStore } from '../store/types.js'
import type { Credential } from './credential.js'
import type { Guards } from './guards.js'
import { createLocalCaches } from './local-caches.js'
import { createRefresher, type CallContext, type Need } from './refresher.js'
import { refreshDue, served, usable, type ServedToken } from './rules.js'

/** How a credential of an app is obtained, for one caller and secret. */
export interface Source {
  /** Whether the caller's secret is known to be right, given the stored entry (null: none). */
  verified: (cached: TokenEntry | null) => Promise<boolean>
  /** The upstream fetch of a new credential, by the deadline (`forced`: a forced refresh of a reported token). */
  fetch: (deadline: number, forced: boolean) => Need['fetch']
  /** The answer while the store is down, when this instance has no usable copy. */
  outage?: () => Promise<ServedToken>
}

export interface LifecycleOptions {
  credential: Credential
  /**
   * The credential this one is made with (a ticket's: the access token). An entry is served only to the secret of
   * that one's stored entry, when there is one (after a secret is rotated, the old secret gets no ticket either), and
   * the hot cache forgets the app when that one changes.
   */
  madeWith?: Credential
  store: TokenStore
  guards: Guards
  /** A stored entry is served only while it has more than this left. */
  marginMs: number
  /** A served entry with less than this left is refreshed in the background. */
  aheadMs: number
  requestDeadlineMs: number
  lockLeaseMs: number
  /** How long a served entry is answered from process memory; 0: never. */
  hotMs: number
  hotMax: number
  /** Apps whose last served entry is kept in process, to answer while the store is down. */
  copiesMax: number
  metrics?: Metrics | undefined
  now: () => number
}

/** How long a copy waits to be put back for the change messages to resume after Redis came back. */
const PUBSUB_WAIT_MS = 2000

export function createLifecycle (opts: LifecycleOptions) {
  const { credential, store, guards, now, metrics, marginMs, aheadMs, hotMs } = opts
  const { slot } = credential
  const lookups = metrics?.lookups(credential.name)
  const caches = createLocalCaches({ hotMs, hotMax: opts.hotMax, copiesMax: opts.copiesMax, marginMs, now })
  const { madeWith } = opts
  store.onChange((subject, stamp) => {
    const appId = credential.ownerOf(subject)
    if (appId !== undefined) caches.changed(appId, stamp)
    const maker = madeWith?.ownerOf(subject)
    if (maker !== undefined) caches.forgetHot(maker)
  })
  store.onPubsub((up, missed) => caches.pubsub(up, missed))
  const refresher = createRefresher({ credential, store, guards, lockLeaseMs: opts.lockLeaseMs, now, metrics })

  /** A refresh that is met by any entry for this secret with more than the serving margin left. */
  function freshNeed (appId: string, fp: string, verified: boolean, source: Source, ctx?: CallContext, forced = false): Need {
    const deadline = ctx?.deadline ?? now() + opts.requestDeadlineMs
    return {
      appId,
      fp,
      verified,
      deadline,
      forced,
      fetch: source.fetch(deadline, forced),
      confirm: source.fetch(deadline, false),
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now())
    }
  }

  /** A refresh ahead of expiry (the secret is the served entry's, so verified): met only by an entry not yet due. */
  function aheadNeed (appId: string, fp: string, source: Source): Need {
    return {
      ...freshNeed(appId, fp, true, source),
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, marginMs, now()) && !refreshDue(entry, aheadMs, now())
    }
  }

  /**
   * After the store lost everything (a Redis restart without persistence, a flush), put back this instance's copy of
   * a still-valid entry instead of fetching, when a fetch would retire the one every instance serves (classic mode).
   * (When a fetch returns the same credential, nothing is put back: a copy can only be as good as a fetch.)
   * Only a copy no change message can have superseded unheard, only over generation 0, so it never replaces anything
   * another instance wrote since, and only holding the app's lock, so never while another instance fetches (should
   * that one's lease lapse, its write replaces the copy: see the refresher's write).
   */
  async function restoreCopy (appId: string, fp: string, ctx: CallContext): Promise<TokenEntry | null> {
    if (credential.mode !== 'classic' || !usable(caches.copy(appId), fp, marginMs, now())) return null
    // Redis back, its subscriber not yet: whether a change was missed is known once it is (a short wait, once).
    await caches.untilPubsub(PUBSUB_WAIT_MS)
    const copy = caches.restorable(appId)
    if (!usable(copy, fp, marginMs, now())) return null
    const entry = await refresher.whileLocked(appId, async () => {
      if (await store.generation(appId, slot) !== 0) return null
      const restored = tokenEntry({ ...copy, generation: 1 })
      return await store.compareAndSet(appId, restored, 0, slot) ? restored : null
    })
    if (!entry) return null
    ctx.log.info({ credential: credential.name }, 'the store had lost this app\'s entry; restored from this instance\'s copy')
    // Waiters poll; a failed announcement only delays them.
    await store.notify(credential.subject(appId), stampOf(entry)).catch(() => {})
    return entry
  }

  /** An entry for a miss: this instance's copy put back into a store that lost it, else a refresh. */
  async function refreshed (appId: string, fp: string, cached: TokenEntry | null, source: Source, ctx: CallContext): Promise<TokenEntry> {
    const restored = cached === null ? await restoreCopy(appId, fp, ctx) : null
    if (restored) return restored
    const verified = await source.verified(cached)
    return await refresher.shared(`${appId}\0${fp}`, async () => await refresher.obtain(freshNeed(appId, fp, verified, source, ctx), ctx))
  }

  /** While the store is down: this instance's copy, else the source's answer, else STORE_UNAVAILABLE. */
  async function duringOutage (appId: string, fp: string, source: Source): Promise<ServedToken> {
    const copy = caches.copy(appId)
    if (copy && !sameString(copy.secretFingerprint, fp)) {
      throw new AppError('SECRET_MISMATCH', `appSecret does not match the secret of the cached ${credential.name} for this appId`)
    }
    if (usable(copy, fp, marginMs, now())) {
      lookups?.outageHit.inc()
      return served(copy, now())
    }
    lookups?.outageMiss.inc()
    if (source.outage) return await source.outage()
    throw new AppError('STORE_UNAVAILABLE', `The store is unavailable, and a fetch of a ${credential.name} would retire the one other instances serve`)
  }

  /** The hot-cache answer, synchronously, when there is one for this appId and secret. */
  function fromHot (appId: string, secret: string): ServedToken | undefined {
    const found = caches.hot(appId, secret)
    if (found === undefined) return undefined
    lookups?.hotHit.inc()
    return served(found.entry, found.at)
  }

  /** The credential for appId and this secret (its fingerprint fp). */
  async function get (appId: string, secret: string, fp: string, source: Source, ctx: CallContext): Promise<ServedToken> {
    return fromHot(appId, secret) ?? await afterHotMiss(appId, secret, fp, source, ctx)
  }

  /** The credential for appId and this secret, for a caller that looked in the hot cache already (fromHot). */
  async function afterHotMiss (appId: string, secret: string, fp: string, source: Source, ctx: CallContext): Promise<ServedToken> {
    if (hotMs > 0) lookups?.hotMiss.inc()
    const mark = caches.mark()
    let cached: TokenEntry | null
    let maker: TokenEntry | null = null
    try {
      if (madeWith) [cached, maker] = await store.getPair(appId, slot, madeWith.slot)
      else cached = await store.get(appId, slot)
    } catch (err) {
      if (err instanceof StoreError) return await duringOutage(appId, fp, source)
      throw err
    }
    // Not the secret of what this is made with: checked as for that one first (a rotated secret passes, an old one not).
    if (maker !== null && !sameString(maker.secretFingerprint, fp)) await source.verified(null)
    if (usable(cached, fp, marginMs, now())) {
      lookups?.storeHit.inc()
      const due = refreshDue(cached, aheadMs, now())
      caches.keep(appId, secret, cached, mark, !due)
      if (due) refresher.inBackground(aheadNeed(appId, fp, source), ctx.log) // never rejects: failures are logged there
      return served(cached, now())
    }
    lookups?.storeMiss.inc()
    try {
      const entry = await refreshed(appId, fp, cached, source, ctx)
      caches.keep(appId, secret, entry, mark, true)
      return served(entry, now())
    } catch (err) {
      if (usable(cached, fp, 0, now())) {
        // A backoff's refusal says nothing new: the failure behind it was logged when it happened.
        const level = err instanceof AppError && err.kind === 'UPSTREAM_BACKOFF' ? 'debug' : 'warn'
        ctx.log[level]({ apiCode: (err as AppError).apiCode, credential: credential.name }, 'refresh failed; serving the stored entry while it lasts')
        return served(cached, now())
      }
      if (err instanceof StoreError) return await duringOutage(appId, fp, source)
      throw err
    }
  }

  /**
   * For the scheduler: refresh the app's entry for this secret when it is due, or (`evenIfNone`) when there is none.
   */
  async function refreshIfDue (appId: string, fp: string, source: Source, evenIfNone: boolean, log: FastifyBaseLogger): Promise<void> {
    const entry = await store.get(appId, slot)
    const held = usable(entry, fp, 0, now())
    if (held ? usable(entry, fp, marginMs, now()) && !refreshDue(entry, aheadMs, now()) : !evenIfNone) return
    await refresher.inBackground(aheadNeed(appId, fp, source), log)
  }

  return {
    credential,
    caches,
    refresher,
    fromHot,
    get,
    afterHotMiss,
    freshNeed,
    refreshIfDue,
    /** Each app this instance has served, with its entry's expiry (for the seconds-left gauge). */
    known: caches.known,
    close: refresher.drain
  }
}

export type Lifecycle = ReturnType<typeof createLifecycle>
