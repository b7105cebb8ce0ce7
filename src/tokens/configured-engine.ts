/**
 * The engine of a credential whose secret is configured here rather than sent by the caller (a WeCom application's
 * token, a component's, an authorizer's): the lifecycle over the store, its guards with no unverified secret and no
 * forced refresh, and the same guards over process memory for the fetches made while the store is down. Each kind
 * differs only in how one is fetched and who owns it.
 */
import type { Metrics } from '../metrics.js'
import { createMemoryStore } from '../store/memory-store.js'
import { fetchedEntry, type TokenStore } from '../store/types.js'
import type { FetchedToken, FetchOptions } from '../wechat/client.js'
import type { Credential } from './credential.js'
import { configuredOnly, createGuards } from './guards.js'
import { createLifecycle } from './lifecycle.js'
import type { CallContext } from './refresher.js'
import { served, type ServedToken } from './rules.js'

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

  async function close (): Promise<void> {
    await lifecycle.close()
    await outageState.close()
  }

  return { guards, lifecycle, directFetch, close }
}

export type ConfiguredEngine = ReturnType<typeof createConfiguredEngine>
