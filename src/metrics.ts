/** Prometheus metrics (prom-client), one registry per app instance. Labels carry appIds and codes, never a secret or token. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** A count since the last collection. */
class Tally {
  #count = 0
  inc (): void { this.#count++ }
  /** The count so far, starting again from 0. */
  take (): number {
    const count = this.#count
    this.#count = 0
    return count
  }
}

/**
 * A counter with two labels for the hot path: each label pair gets a Tally, a plain number that the counter's
 * collect() adds to prom-client at each scrape (a prom-client inc() costs 0.2 to 0.3 µs). Returns the tally of a pair.
 */
function talliedCounter (registers: Registry[], config: { name: string, help: string, labelNames: [string, string] }) {
  const tallies = new Map<string, Map<string, Tally>>()
  new Counter({ // eslint-disable-line no-new -- registered in `registers`
    ...config,
    registers,
    collect () {
      for (const [first, bySecond] of tallies) {
        for (const [second, tally] of bySecond) this.labels(first, second).inc(tally.take())
      }
    }
  })
  return (first: string, second: string): Tally => {
    let bySecond = tallies.get(first)
    if (!bySecond) {
      bySecond = new Map()
      tallies.set(first, bySecond)
    }
    let tally = bySecond.get(second)
    if (!tally) {
      tally = new Tally()
      bySecond.set(second, tally)
    }
    return tally
  }
}

/** What the store gauges read at each scrape; set once the store exists (metrics are made before it). */
export interface StoreProbe {
  ping: () => Promise<void>
  readonly pubsubUp: boolean
}

export function createMetrics () {
  let store: StoreProbe | undefined
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'wxtoken_' })
  const registers = [registry]

  const lookup = talliedCounter(registers, {
    name: 'wxtoken_cache_lookups_total',
    help: 'Token lookups by layer (hot: process memory, store: Redis or memory store, outage: the copy used while the store is down) and result.',
    labelNames: ['layer', 'result']
  })
  const lockWaits = new Counter({ name: 'wxtoken_lock_waits_total', help: 'Refreshes that waited for another holder of the app\'s lock.', registers })
  const answered = talliedCounter(registers, {
    name: 'wxtoken_requests_total',
    help: 'Answered requests by route and envelope statusCode (HTTP status for routes without an envelope).',
    labelNames: ['route', 'status_code']
  })

  const metrics = {
    registry,
    countRequest (route: string, status: number): void {
      answered(route, String(status)).inc()
    },
    hotHit: lookup('hot', 'hit'),
    hotMiss: lookup('hot', 'miss'),
    storeHit: lookup('store', 'hit'),
    storeMiss: lookup('store', 'miss'),
    outageHit: lookup('outage', 'hit'),
    outageMiss: lookup('outage', 'miss'),
    upstreamCalls: new Counter({
      name: 'wxtoken_upstream_calls_total',
      help: 'Calls to WeChat by endpoint and outcome: errcode ("0" for a token), or http_<status>, network, timeout, bad_body.',
      labelNames: ['endpoint', 'errcode'] as const,
      registers
    }),
    upstreamSeconds: new Histogram({
      name: 'wxtoken_upstream_seconds',
      help: 'Latency of calls to WeChat.',
      labelNames: ['endpoint'] as const,
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers
    }),
    lockWaits,
    lockTimeouts: new Counter({ name: 'wxtoken_lock_wait_timeouts_total', help: 'Waits for another instance\'s refresh that ran past the request deadline.', registers }),
    forcedRefreshes: new Counter({
      name: 'wxtoken_forced_refreshes_total',
      help: 'Forced refreshes by outcome (refreshed, refused).',
      labelNames: ['outcome'] as const,
      registers
    }),
    quotaUsed: new Gauge({
      name: 'wxtoken_upstream_quota_used',
      help: 'Upstream token calls counted against the app\'s daily budget today (Beijing time), as last seen by this instance.',
      labelNames: ['app_id'] as const,
      registers
    }),
    tokenSecondsLeft: new Gauge({
      name: 'wxtoken_token_seconds_left',
      help: 'Seconds left on the token this instance last served for each app.',
      labelNames: ['app_id'] as const,
      registers
    }),
    localRefusals: new Counter({
      name: 'wxtoken_local_refusals_total',
      help: 'Upstream token calls refused here without asking WeChat, by reason: budget, unverified, forced_refresh, remembered.',
      labelNames: ['reason'] as const,
      registers
    }),
    /** Lets the store gauges read the store. */
    observeStore (probe: StoreProbe): void {
      store = probe
    }
  }
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_store_up',
    help: '1 while the token store answers (a PING at each scrape), else 0.',
    registers,
    async collect () {
      this.set(await store?.ping().then(() => 1, () => 0) ?? 1)
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_store_pubsub_up',
    help: '1 while change messages between instances reach this one (Redis pub/sub subscribed and publishing), else 0.',
    registers,
    collect () {
      this.set(store === undefined || store.pubsubUp ? 1 : 0)
    }
  })
  return metrics
}

export type Metrics = ReturnType<typeof createMetrics>
