/** Prometheus metrics (prom-client), one registry per app instance. Labels carry appIds and codes, never a secret or token. */
import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { SHED_REASONS } from './connection-limit.js'
import type { CredentialName } from './tokens/credential.js'

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

/** Tallies by label values, one Map level per label. */
type TallyTree = Map<string, TallyTree | Tally>

/**
 * A counter for the hot path: each set of label values gets a Tally, a plain number that the counter's collect()
 * adds to prom-client at each scrape (a prom-client inc() costs 0.2 to 0.3 µs). Returns the tally of a set of values.
 */
function talliedCounter (registers: Registry[], config: { name: string, help: string, labelNames: string[] }) {
  const tallies: TallyTree = new Map()
  const depth = config.labelNames.length
  new Counter({ // eslint-disable-line no-new -- registered in `registers`
    ...config,
    registers,
    collect () {
      const visit = (tree: TallyTree, values: string[]): void => {
        for (const [value, child] of tree) {
          if (child instanceof Tally) this.labels(...values, value).inc(child.take())
          else visit(child, [...values, value])
        }
      }
      visit(tallies, [])
    }
  })
  return (...values: string[]): Tally => {
    let tree = tallies
    for (let level = 0; level < depth - 1; level++) {
      let next = tree.get(values[level]!) as TallyTree | undefined
      if (!next) {
        next = new Map()
        tree.set(values[level]!, next)
      }
      tree = next
    }
    let tally = tree.get(values[depth - 1]!) as Tally | undefined
    if (!tally) {
      tally = new Tally()
      tree.set(values[depth - 1]!, tally)
    }
    return tally
  }
}

/** The lookups of one credential, by layer and result. */
export interface Lookups {
  hotHit: Tally
  hotMiss: Tally
  storeHit: Tally
  storeMiss: Tally
  outageHit: Tally
  outageMiss: Tally
}

/** What the store gauges read at each scrape; set once the store exists (metrics are made before it). */
export interface StoreProbe {
  ping: () => Promise<void>
  readonly pubsubUp: boolean
}

/** What the configuration and the build set, exported once at start for alerts and dashboards to compare against. */
export interface Settings {
  version: string
  /** TOKEN_SERVE_MARGIN_SECONDS. */
  serveMarginSeconds: number
  /** The daily budget of upstream calls per app for each credential (DAILY_UPSTREAM_BUDGET, TICKET_DAILY_BUDGET). */
  budgets: Record<CredentialName, number>
  /** The apps of WECHAT_APPS (0 in dynamic mode). */
  configuredApps: number
  /** The endpoint tokens are fetched from (stable_token or token). */
  tokenEndpoint: string
}

/**
 * The WeChat refusals the alerts watch. Their series exist at 0 from the start, so that the first refusal is an
 * increase to the rules (a counter series born at 1 is flat to increase()).
 */
const WATCHED_ERRCODES = ['-1', '40001', '40013', '40125', '40164', '40243', '45009', '45011', '89503', '89506', '89507']
const CREDENTIALS: CredentialName[] = ['access_token', 'jsapi_ticket', 'wx_card_ticket']

export function createMetrics () {
  let store: StoreProbe | undefined
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'wxtoken_' })
  const registers = [registry]

  const lookup = talliedCounter(registers, {
    name: 'wxtoken_cache_lookups_total',
    help: 'Lookups by credential (access_token, jsapi_ticket, wx_card_ticket), layer (hot: process memory, store: Redis or memory store, ' +
      'outage: the copy used while the store is down) and result.',
    labelNames: ['credential', 'layer', 'result']
  })
  const lockWaits = new Counter({
    name: 'wxtoken_lock_waits_total',
    help: 'Refreshes that waited for another holder of the app\'s lock, by credential.',
    labelNames: ['credential'] as const,
    registers
  })
  const answered = talliedCounter(registers, {
    name: 'wxtoken_requests_total',
    help: 'Answered requests by route and envelope statusCode (HTTP status for routes without an envelope).',
    labelNames: ['route', 'status_code']
  })

  const upstreamBudget = new Gauge({
    name: 'wxtoken_upstream_budget',
    help: 'Upstream calls allowed per app per day (Beijing time) for a credential: DAILY_UPSTREAM_BUDGET for access_token, ' +
      'TICKET_DAILY_BUDGET for each ticket type; the ceiling of wxtoken_upstream_quota_used.',
    labelNames: ['credential'] as const,
    registers
  })
  const serveMargin = new Gauge({
    name: 'wxtoken_token_serve_margin_seconds',
    help: 'TOKEN_SERVE_MARGIN_SECONDS: a cached token or ticket is served only while it has more than this left.',
    registers
  })
  const configuredApps = new Gauge({
    name: 'wxtoken_configured_apps',
    help: 'The apps WECHAT_APPS lists (0 in dynamic mode): with them, a WeChat refusal of a secret or appId is a configuration to fix.',
    registers
  })
  const buildInfo = new Gauge({
    name: 'wxtoken_build_info',
    help: 'Always 1; the version label is the service\'s version (package.json).',
    labelNames: ['version'] as const,
    registers
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_heap_limit_bytes',
    help: 'The V8 heap size limit (set by --max-old-space-size): the process dies out of memory when the heap reaches it.',
    registers,
    collect () {
      this.set(getHeapStatistics().heap_size_limit)
    }
  })

  const connectionsShed = new Counter({
    name: 'wxtoken_connections_shed_total',
    help: 'Connections closed to make room for a new one past MAX_CONNECTIONS, by reason: stalled (no whole request within ' +
      'CONNECTION_GRACE_MS), idle (kept alive between requests), receiving (still sending its request), new (the new one: all others were being answered).',
    labelNames: ['reason'] as const,
    registers
  })
  for (const reason of SHED_REASONS) connectionsShed.labels(reason).inc(0)

  const metrics = {
    registry,
    connectionsShed,
    countRequest (route: string, status: number): void {
      answered(route, String(status)).inc()
    },
    /** The lookup tallies of a credential (bound once, so the hot path only adds). */
    lookups (credential: string): Lookups {
      return {
        hotHit: lookup(credential, 'hot', 'hit'),
        hotMiss: lookup(credential, 'hot', 'miss'),
        storeHit: lookup(credential, 'store', 'hit'),
        storeMiss: lookup(credential, 'store', 'miss'),
        outageHit: lookup(credential, 'outage', 'hit'),
        outageMiss: lookup(credential, 'outage', 'miss')
      }
    },
    upstreamCalls: new Counter({
      name: 'wxtoken_upstream_calls_total',
      help: 'Calls to WeChat by endpoint (stable_token, token, getticket, getuserphonenumber) and outcome: errcode ("0" for success), ' +
        'or http_<status>, network, timeout, bad_body.',
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
    lockTimeouts: new Counter({
      name: 'wxtoken_lock_wait_timeouts_total',
      help: 'Waits for another instance\'s refresh that ran past the request deadline, by credential.',
      labelNames: ['credential'] as const,
      registers
    }),
    forcedRefreshes: new Counter({
      name: 'wxtoken_forced_refreshes_total',
      help: 'Forced refreshes by outcome (refreshed, refused).',
      labelNames: ['outcome'] as const,
      registers
    }),
    quotaUsed: new Gauge({
      name: 'wxtoken_upstream_quota_used',
      help: 'Upstream calls for a credential counted against the app\'s daily budget for it today (Beijing time), as last seen by this instance.',
      labelNames: ['app_id', 'credential'] as const,
      registers
    }),
    tokenSecondsLeft: new Gauge({
      name: 'wxtoken_token_seconds_left',
      help: 'Seconds left on the credential (access token, ticket) this instance last served for each app.',
      labelNames: ['app_id', 'credential'] as const,
      registers
    }),
    localRefusals: new Counter({
      name: 'wxtoken_local_refusals_total',
      help: 'Upstream calls refused here without asking WeChat, by reason (budget, unverified, forced_refresh, remembered, backoff) and credential.',
      labelNames: ['reason', 'credential'] as const,
      registers
    }),
    upstreamBackoffs: new Counter({
      name: 'wxtoken_upstream_backoffs_total',
      help: 'Failed fetches (unreachable, an HTTP error, errcode -1 or 45011, a body that is not an answer) that started or lengthened ' +
        'an app\'s backoff, by credential: nobody fetches that credential of the app again for 1 s, doubling to 60 s.',
      labelNames: ['credential'] as const,
      registers
    }),
    /** Sets the gauges of the settings (budgets, serving margin, version); called once, at start. */
    describe (settings: Settings): void {
      for (const [credential, budget] of Object.entries(settings.budgets)) upstreamBudget.labels(credential).set(budget)
      serveMargin.set(settings.serveMarginSeconds)
      buildInfo.labels(settings.version).set(1)
      configuredApps.set(settings.configuredApps)
      for (const errcode of WATCHED_ERRCODES) metrics.upstreamCalls.labels(settings.tokenEndpoint, errcode).inc(0)
      for (const credential of CREDENTIALS) {
        metrics.lockTimeouts.labels(credential).inc(0)
        metrics.upstreamBackoffs.labels(credential).inc(0)
        for (const reason of ['budget', 'unverified', 'forced_refresh', 'remembered', 'backoff']) metrics.localRefusals.labels(reason, credential).inc(0)
      }
      for (const outcome of ['refreshed', 'refused']) metrics.forcedRefreshes.labels(outcome).inc(0)
    },
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
