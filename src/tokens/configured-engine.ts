/**
 * The engine of a credential whose secret is configured here rather than sent by the caller (a WeCom application's
 * token, a component's, an authorizer's): the lifecycle over the store, its guards with no unverified secret and no
 * forced refresh, and the same guards over process memory for the fetches made while the store is down. Each kind
 * differs only in how one is fetched and who owns it.
 */
import { AppError } from '../errors.js'
import type { Metrics } from '../metrics.js'
import { createMemoryStore } from '../store/memory-store.js'
import { fetchedEntry, type TokenEntry, type TokenStore } from '../store/types.js'
import type { FetchedToken, FetchOptions } from '../wechat/client.js'
import type { Credential } from './credential.js'
import { configuredOnly, createGuards } from './guards.js'
import { createLifecycle, type Source } from './lifecycle.js'
import type { CallContext, Need } from './refresher.js'
import { served, usable, type ServedToken } from './rules.js'
import type { RefreshOutcome } from './with-token.js'

export interface ConfiguredEngineOptions {
  credential: Credential
  store: TokenStore
  negativeCacheSeconds: number
  marginMs: number
  aheadMs: number
  requestDeadlineMs: number
  lockLeaseMs: number
  hotMs: number
  hotMax: number
  /** Owners whose last served entry is kept in process for a store outage, and small values kept by the outage guards. */
  outageMax: number
  metrics?: Metrics | undefined
  now: () => number
}

export function createConfiguredEngine (opts: ConfiguredEngineOptions) {
  const { credential, store, now, metrics } = opts
  const guardOptions = configuredOnly(opts.negativeCacheSeconds, now, metrics)
  const guards = createGuards(store, guardOptions)
  /** While the store is down: the same guards, their state kept in process (bounded). */
  const outageState = createMemoryStore(now, { maxValues: opts.outageMax })
  const outageGuards = createGuards(outageState, guardOptions)
  const lifecycle = createLifecycle({
    credential,
    store,
    guards,
    marginMs: opts.marginMs,
    aheadMs: opts.aheadMs,
    requestDeadlineMs: opts.requestDeadlineMs,
    lockLeaseMs: opts.lockLeaseMs,
    hotMs: opts.hotMs,
    hotMax: opts.hotMax,
    copiesMax: opts.outageMax,
    metrics,
    now
  })

  /**
   * While the store is down and this instance has no usable copy: one direct fetch for every caller of this instance,
   * under the process-local guards, kept in process only.
   */
  async function directFetch (owner: string, fp: string, ctx: CallContext,
    fetch: (control: Omit<FetchOptions, 'forceRefresh'>) => Promise<FetchedToken>): Promise<ServedToken> {
    ctx.log.warn({ credential: credential.name }, 'token store unavailable: fetching directly')
    const entry = await lifecycle.refresher.shared(`${owner}\0outage`, async () => {
      const deadline = ctx.deadline ?? now() + opts.requestDeadlineMs
      const fetched = await outageGuards.call({ credential, appId: owner, fp, verified: true, origin: ctx.origin, forced: false }, async (control) =>
        await fetch({ ...control, deadline }))
      return fetchedEntry(fetched, credential.mode, fp, 0)
    })
    lifecycle.caches.keepUnstored(owner, entry)
    return served(entry, now())
  }

  /**
   * WeChat refused this token on a call made with it (40001 / 42001, WeCom's 40014 / 42001): fetch the owner's token
   * again, only while the refused one is still the stored one (a normal fetch; in classic mode spaced as a forced
   * refresh, since it retires the one every other caller holds). A fetch that gives the refused token back is stored as
   * it is (the caller then reports it refused again). Not fetched now (spaced, or the owner's fetches backed off): the
   * current token, and why.
   */
  async function refreshReported (owner: string, secret: string, fp: string, reported: string, source: Source, ctx: CallContext): Promise<RefreshOutcome> {
    const { caches, refresher } = lifecycle
    const mark = caches.mark()
    const need: Need = {
      ...lifecycle.freshNeed(owner, fp, true, source, ctx),
      reported,
      satisfied: (entry): entry is TokenEntry => usable(entry, fp, 0, now()) && entry.accessToken !== reported
    }
    try {
      const entry = await refresher.shared(`${owner}\0${reported}`, async () => await refresher.obtain(need, ctx))
      caches.keep(owner, secret, entry, mark, false)
      return { token: served(entry, now()) }
    } catch (err) {
      if (err instanceof AppError && (err.kind === 'UPSTREAM_BACKOFF' || err.kind === 'FORCE_REFRESH_LIMITED')) {
        const current = await store.get(owner)
        return { token: usable(current, fp, 0, now()) ? served(current, now()) : null, notice: err }
      }
      throw err
    }
  }

  async function close (): Promise<void> {
    await lifecycle.close()
    await outageState.close()
  }

  return { guards, lifecycle, directFetch, refreshReported, close }
}

export type ConfiguredEngine = ReturnType<typeof createConfiguredEngine>
