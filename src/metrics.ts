/** Prometheus metrics (prom-client), one registry per app instance. Labels carry appIds and codes, never a secret or token. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export function createMetrics () {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'wxtoken_' })
  const registers = [registry]

  const cacheLookups = new Counter({
    name: 'wxtoken_cache_lookups_total',
    help: 'Token lookups by layer (hot: process memory, store: Redis or memory store, outage: the copy used while the store is down) and result.',
    labelNames: ['layer', 'result'] as const,
    registers
  })
  const lockWaits = new Counter({ name: 'wxtoken_lock_waits_total', help: 'Refreshes that waited for another holder of the app\'s lock.', registers })

  const requests = new Counter({
    name: 'wxtoken_requests_total',
    help: 'Answered requests by route and envelope statusCode (HTTP status for routes without an envelope).',
    labelNames: ['route', 'status_code'] as const,
    registers
  })
  /** Label children by route and status, made once: labels() hashes its values on every call. */
  const requestChildren = new Map<string, Map<number, { inc: () => void }>>()

  const metrics = {
    registry,
    countRequest (route: string, status: number): void {
      let byStatus = requestChildren.get(route)
      if (!byStatus) {
        byStatus = new Map()
        requestChildren.set(route, byStatus)
      }
      let child = byStatus.get(status)
      if (!child) {
        child = requests.labels(route, String(status))
        byStatus.set(status, child)
      }
      child.inc()
    },
    hotHit: cacheLookups.labels('hot', 'hit'),
    hotMiss: cacheLookups.labels('hot', 'miss'),
    storeHit: cacheLookups.labels('store', 'hit'),
    storeMiss: cacheLookups.labels('store', 'miss'),
    outageHit: cacheLookups.labels('outage', 'hit'),
    outageMiss: cacheLookups.labels('outage', 'miss'),
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
    })
  }
  return metrics
}

export type Metrics = ReturnType<typeof createMetrics>
