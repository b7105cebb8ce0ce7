/** Prometheus metrics (prom-client), one registry per app instance. Labels carry appIds and codes, never a secret or token. */
import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { CredentialName, GuardedName } from './tokens/credential.js'
import { beijingDay } from './tokens/rules.js'

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

/** Each app this instance served a credential for, with its expiry (epoch ms): what the per-app gauges read at each scrape. */
export type KnownApps = () => Iterable<readonly [appId: string, credential: string, expiresAt: number]>

export interface MetricsOptions {
  /** METRICS_MAX_APPS: per-app series exported per metric and credential at most. */
  maxApps?: number
}

/** The first `max` items by `before` (sorted only when there are more, so the usual few apps cost no sort). */
function firstOf<T> (items: T[], max: number, before: (a: T, b: T) => number): T[] {
  if (items.length <= max) return items
  return max === 0 ? [] : items.sort(before).slice(0, max)
}

/** The per-app figures of one credential in one rendering. */
interface CredentialApps {
  known: number
  /** The fewest seconds left over the apps whose credential has not expired (Infinity when none). */
  minLeft: number
  /** The apps exported, with their seconds left: the fewest first, expired ones last. */
  urgent: Array<[string, number]>
  /** Today's most quota used, and the apps exported with theirs: the most first. */
  maxUsed: number
  mostUsed: Array<[string, number]>
}

const nextTurn = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

/** What the configuration and the build set, exported once at start for alerts and dashboards to compare against. */
export interface Settings {
  version: string
  /** TOKEN_SERVE_MARGIN_SECONDS. */
  serveMarginSeconds: number
  /**
   * The daily budget of upstream calls per app for each credential budgeted by the day (DAILY_UPSTREAM_BUDGET,
   * TICKET_DAILY_BUDGET, SESSION_DAILY_BUDGET, WECOM_DAILY_BUDGET); WeCom's tickets are budgeted by the hour.
   */
  budgets: Partial<Record<GuardedName, number>>
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
const CREDENTIALS: CredentialName[] = ['access_token', 'jsapi_ticket', 'wx_card_ticket', 'wecom_token', 'wecom_corp_ticket', 'wecom_agent_ticket', 'component_token', 'authorizer_token',
  'authorizer_jsapi_ticket', 'authorizer_wx_card_ticket']

export function createMetrics (options: MetricsOptions = {}) {
  const maxApps = options.maxApps ?? 100
  let store: StoreProbe | undefined
  let sources: KnownApps[] = []
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'wxtoken_' })
  // The runtime's version is nobody's business who can reach /metrics; the service's own is wxtoken_build_info.
  registry.removeSingleMetric('wxtoken_nodejs_version_info')
  const registers = [registry]

  /** Today's (Beijing time) upstream calls per credential and app, as this instance last counted them. */
  const quota = new Map<string, Map<string, number>>()
  let quotaDay = ''
  function quotaToday (): Map<string, Map<string, number>> {
    const day = beijingDay(Date.now())
    if (day !== quotaDay) {
      quota.clear()
      quotaDay = day
    }
    return quota
  }

  /**
   * The per-app figures, taken once for all the gauges of a rendering, a source (tokens, tickets) at a time with a turn
   * of the event loop between steps: with thousands of apps each step takes a few milliseconds.
   */
  async function takeApps (): Promise<Map<string, CredentialApps>> {
    const left = new Map<string, Array<[string, number]>>(CREDENTIALS.map((credential) => [credential, []]))
    for (const source of sources) {
      const now = Date.now()
      for (const [appId, credential, expiresAt] of source()) {
        let apps = left.get(credential)
        if (!apps) left.set(credential, apps = [])
        apps.push([appId, Math.max(0, Math.floor((expiresAt - now) / 1000))])
      }
      await nextTurn()
    }
    const urgency = (seconds: number): number => seconds > 0 ? seconds : Infinity
    const figures = new Map<string, CredentialApps>()
    for (const [credential, apps] of left) {
      let minLeft = Infinity
      for (const [, seconds] of apps) if (seconds > 0 && seconds < minLeft) minLeft = seconds
      const urgent = firstOf(apps, maxApps, (a, b) => urgency(a[1]) - urgency(b[1]))
      figures.set(credential, { known: apps.length, minLeft, urgent, maxUsed: 0, mostUsed: [] })
    }
    await nextTurn()
    for (const [credential, apps] of quotaToday()) {
      const used = [...apps]
      let maxUsed = 0
      for (const [, count] of used) if (count > maxUsed) maxUsed = count
      const mostUsed = firstOf(used, maxApps, (a, b) => b[1] - a[1])
      figures.set(credential, { ...(figures.get(credential) ?? { known: 0, minLeft: Infinity, urgent: [] }), maxUsed, mostUsed })
    }
    await nextTurn()
    return figures
  }
  let taking: Promise<Map<string, CredentialApps>> | undefined
  /** The figures of the rendering under way: its gauges are collected together, and the next rendering takes them anew. */
  async function appFigures (): Promise<Map<string, CredentialApps>> {
    taking ??= takeApps().finally(() => { taking = undefined })
    return await taking
  }

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
  /** The tallies of wxtoken_requests_total by route and numeric status, found without making a label string per request. */
  const requestTallies = new Map<string, Map<number, Tally>>()

  const upstreamBudget = new Gauge({
    name: 'wxtoken_upstream_budget',
    help: 'Upstream calls allowed per app per day (Beijing time) for a credential: DAILY_UPSTREAM_BUDGET for access_token, ' +
      'TICKET_DAILY_BUDGET for each ticket type, SESSION_DAILY_BUDGET for code2session (Mini Program logins); the ceiling of wxtoken_upstream_quota_used.',
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
    help: 'The apps WECHAT_APPS lists (0 in dynamic mode), and the WeCom applications of WECOM_APPS: with them, a WeChat refusal of a secret or appId is a configuration to fix.',
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
    help: 'Connections closed to make room for a new one past the connection limit of a listener (main: MAX_CONNECTIONS; metrics: ' +
      'the 64 of METRICS_PORT), by reason, in the order they are chosen: stalled (no whole request within CONNECTION_GRACE_MS), ' +
      'pipelined (more than 16 requests under way), unread (answers left unread for CONNECTION_GRACE_MS), held (only refusals held ' +
      'until their second ends under way), headers (the headers of its first request still arriving), ' +
      'silent (no byte yet), idle (kept alive between requests), ' +
      'receiving (a request still arriving: its body, or the next one of a kept-alive connection), new (the new one: all others were being answered).',
    labelNames: ['listener', 'reason'] as const,
    registers
  })

  const metrics = {
    registry,
    connectionsShed,
    countRequest (route: string, status: number): void {
      let byStatus = requestTallies.get(route)
      if (byStatus === undefined) requestTallies.set(route, byStatus = new Map())
      let tally = byStatus.get(status)
      if (tally === undefined) byStatus.set(status, tally = answered(route, String(status)))
      tally.inc()
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
      help: 'Calls to WeChat by endpoint (stable_token, token, getticket, getuserphonenumber, jscode2session; WeCom\'s gettoken, get_jsapi_ticket, ' +
        'ticket/get; the Open Platform\'s api_component_token, api_create_preauthcode, api_start_push_ticket) and outcome: errcode ("0" for success), ' +
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
    passthroughCalls: new Counter({
      name: 'wxtoken_passthrough_calls_total',
      help: 'WeChat API calls passed through (WECHAT_PASSTHROUGH), by upstream (wechat, wecom) and outcome: answered (WeChat answered, ' +
        'whatever it said), failed (WeChat unreachable, its answer broken off, or no answer within WECHAT_PASSTHROUGH_TIMEOUT_MS), refused ' +
        '(refused here: a path not passed through, a body too large, too many calls in flight), abandoned (the caller closed its connection first).',
      labelNames: ['upstream', 'outcome'] as const,
      registers
    }),
    passthroughSeconds: new Histogram({
      name: 'wxtoken_passthrough_seconds',
      help: 'Time from sending a passed-through call to WeChat\'s answer headers, by upstream.',
      labelNames: ['upstream'] as const,
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers
    }),
    passthroughRepairs: new Counter({
      name: 'wxtoken_passthrough_token_repairs_total',
      help: 'Passed-through calls WeChat refused for a token handed out here (40001, 42001, 40014), by upstream and outcome: replaced (the ' +
        'token was replaced and the call sent again), resent (sent again with the token that had already replaced it), passed_on (WeChat\'s ' +
        'answer passed on: not replaceable now, or the body too large to send again), refused_again (refused with the new token too).',
      labelNames: ['upstream', 'outcome'] as const,
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
    /** Records an app's count of upstream calls for a credential today (its series: see wxtoken_upstream_quota_used). */
    quotaUsed: {
      labels: (appId: string, credential: string) => ({
        set (used: number): void {
          const today = quotaToday()
          let apps = today.get(credential)
          if (!apps) today.set(credential, apps = new Map())
          apps.set(appId, used)
        }
      })
    },
    localRefusals: new Counter({
      name: 'wxtoken_local_refusals_total',
      help: 'Upstream calls refused here without asking WeChat, by reason (budget, unverified, forced_refresh, remembered, backoff) and credential.',
      labelNames: ['reason', 'credential'] as const,
      registers
    }),
    decryptRefusals: new Counter({
      name: 'wxtoken_decrypt_refusals_total',
      help: 'Mini Program data not decrypted after WeChat gave the session key, by reason: session_key (encrypted for another session: ' +
        'wx.login ran after the data was obtained), app (the watermark names another app, or none).',
      labelNames: ['reason'] as const,
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
      for (const upstream of ['wechat', 'wecom']) {
        for (const outcome of ['answered', 'failed', 'refused', 'abandoned']) metrics.passthroughCalls.labels(upstream, outcome).inc(0)
        for (const outcome of ['replaced', 'resent', 'passed_on', 'refused_again']) metrics.passthroughRepairs.labels(upstream, outcome).inc(0)
      }
      metrics.upstreamBackoffs.labels('code2session').inc(0)
      for (const reason of ['budget', 'remembered', 'backoff']) metrics.localRefusals.labels(reason, 'code2session').inc(0)
      for (const reason of ['session_key', 'app']) metrics.decryptRefusals.labels(reason).inc(0)
      for (const outcome of ['recovered', 'list_failed', 'not_authorized']) metrics.authorizerRefreshTokens.labels(outcome).inc(0)
    },
    /** Lets the store gauges read the store. */
    observeStore (probe: StoreProbe): void {
      store = probe
    },
    /** Lets the per-app gauges read the apps this instance served, from each source (tokens, tickets, …) in turn. */
    observeApps (...known: KnownApps[]): void {
      sources = [...sources, ...known]
    },
    /** Lets the verify-ticket gauge read each component's newest ticket held here (when WeChat made it), or none. */
    observeComponentTickets (held: () => Iterable<readonly [string, number | undefined]>): void {
      componentTickets = held
    },
    componentPushes: new Counter({
      name: 'wxtoken_component_pushes_total',
      help: 'Pushes to the component callback, by outcome (accepted, replayed: seen before and answered again, refused; previous_key: ' +
        'decrypted with previousEncodingAESKey, also counted as accepted or replayed) and info_type (component_verify_ticket, authorized, ' +
        'updateauthorized, unauthorized, other; for refused, the reason).',
      labelNames: ['outcome', 'info_type'] as const,
      registers
    }),
    authorizerRefreshTokens: new Counter({
      name: 'wxtoken_authorizer_refresh_tokens_total',
      help: 'What happened to Open Platform authorizers\' refresh tokens, by outcome: authorized (saved from an authorization), rotated ' +
        '(WeChat answered a new one, saved before use), removed (unauthorized), written_back (a store that lost one got it back from an ' +
        'instance), recovered (written back from WeChat\'s authorizer list), list_failed (that list could not be read), ' +
        'not_authorized (WeChat refused one, 61023, and its list did not hold another).',
      labelNames: ['outcome'] as const,
      registers
    })
  }
  let componentTickets: () => Iterable<readonly [string, number | undefined]> = () => []
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_component_ticket_age_seconds',
    help: 'Seconds since WeChat made the newest component_verify_ticket this instance holds, per component (WeChat pushes one every 10 minutes; ' +
      'no sample while it holds none).',
    labelNames: ['component_app_id'],
    registers,
    collect () {
      this.reset()
      for (const [appId, createdAt] of componentTickets()) {
        if (createdAt !== undefined) this.labels(appId).set(Math.max(0, Math.round((Date.now() - createdAt) / 1000)))
      }
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_upstream_quota_used',
    help: 'Upstream calls for a credential counted against the app\'s daily budget for it today (Beijing time), as last seen by this instance; ' +
      'for the METRICS_MAX_APPS apps of each credential that used the most.',
    labelNames: ['app_id', 'credential'],
    registers,
    async collect () {
      const figures = await appFigures()
      this.reset()
      for (const [credential, { mostUsed }] of figures) for (const [appId, used] of mostUsed) this.labels(appId, credential).set(used)
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_upstream_quota_used_max',
    help: 'The most upstream calls any app made today (Beijing time) for a credential, as last seen by this instance (0 when none).',
    labelNames: ['credential'],
    registers,
    async collect () {
      for (const [credential, { maxUsed }] of await appFigures()) this.labels(credential).set(maxUsed)
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_token_seconds_left',
    help: 'Seconds left on the credential (access token, ticket) this instance last served for each app; for the METRICS_MAX_APPS apps of ' +
      'each credential with the fewest left, those at 0 (expired) last.',
    labelNames: ['app_id', 'credential'],
    registers,
    async collect () {
      const figures = await appFigures()
      this.reset()
      for (const [credential, { urgent }] of figures) for (const [appId, left] of urgent) this.labels(appId, credential).set(left)
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_token_seconds_left_min',
    help: 'The fewest seconds left on a credential this instance served, over every app whose credential has not expired.',
    labelNames: ['credential'],
    registers,
    async collect () {
      const figures = await appFigures()
      this.reset()
      for (const [credential, { minLeft }] of figures) if (minLeft !== Infinity) this.labels(credential).set(minLeft)
    }
  })
  new Gauge({ // eslint-disable-line no-new -- registered in `registers`
    name: 'wxtoken_known_apps',
    help: 'The apps this instance served a credential for and keeps a copy of, all of them (per-app series cover METRICS_MAX_APPS at most).',
    labelNames: ['credential'],
    registers,
    async collect () {
      for (const [credential, { known }] of await appFigures()) this.labels(credential).set(known)
    }
  })
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
